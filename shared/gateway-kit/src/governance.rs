//! What a domain team sees of, and bounds in, what each BFF client asks for: the field usage
//! per client, the masks a client may use, and the fanout a request may cost. The client
//! comes from the authenticator (`authorization::client`); every read of either gateway goes
//! through [`Governance::admit`] after its mask parsed and before any upstream call, and
//! counts its fields with [`Admitted::served`] once answered.
//!
//! - Field usage: `gateway_field_reads_total{client,path}` counts each served read once per
//!   leaf path of the view its mask selects or reaches into (the view's leaf paths, so the
//!   label set is bounded by the schema and the client names), and
//!   `gateway_field_last_read_seconds{client,path}` holds the Unix time of the last one.
//!   `gateway_view_info{view}` names the view, so that `gatewayctl usage` knows whose paths
//!   a page lists.
//! - Allowed masks (`[allowed_masks]`): per client, a list of masks; `off`, `log_unknown`
//!   (count in `gateway_masks_unlisted_total{client}` and log once per client and mask) or
//!   `enforce` (PERMISSION_DENIED naming the client and the mask). Masks compare after
//!   normalization: `title,id` and `id,title,id` are the same mask. A client with no list has
//!   no allowed mask.
//! - Fanout budget (`[fanout_budget]`): a request's planned cost is its planned upstream calls
//!   times the keys each carries (see [`Cost`]); `gateway_request_cost{client}` is its
//!   histogram; `measure` only counts, `enforce` refuses a request over its client's budget
//!   with RESOURCE_EXHAUSTED, naming the cost and the budget, before any upstream call.
//! - [`requested_mask`]: the read mask may come from `x-read-mask` metadata (the canonical
//!   JSON string form, as Google's `X-Goog-FieldMask`) for clients that cannot set the field.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use authorization::client::{Client, ClientNames, ClientSettings};
use field_mask::{Mask, MaskError, ViewSchema};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use tonic::{Status, metadata::MetadataMap};

/// The metadata key a read mask may come in, in the canonical JSON string form.
pub const READ_MASK_HEADER: &str = "x-read-mask";

/// The upper bounds of `gateway_request_cost`.
const COST_BUCKETS: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];

/// How many (client, mask) pairs `log_unknown` remembers having logged.
const LOGGED_CAPACITY: usize = 4096;

/// What the allow lists do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMode {
    /// Every valid mask is served, nothing is counted.
    Off,
    /// Masks not on the client's list are served, counted and logged.
    LogUnknown,
    /// Masks not on the client's list are refused with PERMISSION_DENIED.
    Enforce,
}

/// `[allowed_masks]`: the masks each client may read with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedMaskSettings {
    pub mode: MaskMode,
    /// Client name → masks in path form (`title,creator.id`; `*` is the whole view, as an
    /// unset mask is). A mask that does not parse against the view fails start-up.
    #[serde(default)]
    pub clients: BTreeMap<String, Vec<String>>,
}

impl Default for AllowedMaskSettings {
    fn default() -> Self {
        Self {
            mode: MaskMode::Off,
            clients: BTreeMap::new(),
        }
    }
}

/// What the fanout budget does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetMode {
    /// Costs are measured, nothing is refused.
    Measure,
    /// A request over its client's budget is refused.
    Enforce,
}

/// `[fanout_budget]`: the most a request of each client may cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    pub mode: BudgetMode,
    /// The budget of clients without one of their own; 0: none.
    pub default: u64,
    /// Client name → budget; 0: none.
    #[serde(default)]
    pub clients: BTreeMap<String, u64>,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self {
            mode: BudgetMode::Measure,
            default: 0,
            clients: BTreeMap::new(),
        }
    }
}

/// A request's planned cost: upstream calls times the keys each carries. `calls` calls of
/// `keys` keys each (ids of a batch, or a page's size), and `extra` single-key calls (the
/// call that lists a page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub calls: u64,
    pub keys: u64,
    pub extra: u64,
}

impl Cost {
    pub fn total(self) -> u64 {
        self.calls
            .saturating_mul(self.keys)
            .saturating_add(self.extra)
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} upstream calls × {} keys",
            self.total(),
            self.calls,
            self.keys
        )?;
        if self.extra > 0 {
            write!(f, " + {} to list the page", self.extra)?;
        }
        f.write_str(")")
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    client: String,
    path: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    client: String,
}

/// One client's metrics, looked up once per read: its counters per leaf path, and the cost,
/// budget and allow-list series.
#[derive(Debug)]
struct ClientUsage {
    reads: Vec<Counter>,
    last_read: Vec<Gauge>,
    cost: Histogram,
    over_budget: Counter,
    unlisted: Counter,
}

/// The governance of one view; built once per gateway at start-up.
#[derive(Debug)]
pub struct Governance {
    view: ViewSchema,
    leaves: Vec<String>,
    usage: RwLock<HashMap<Arc<str>, Arc<ClientUsage>>>,
    reads: Family<ReadLabels, Counter>,
    last_read: Family<ReadLabels, Gauge>,
    mask_mode: MaskMode,
    allowed: HashMap<String, HashSet<Mask>>,
    unlisted: Family<ClientLabels, Counter>,
    logged: Mutex<HashSet<(Arc<str>, Mask)>>,
    budget_mode: BudgetMode,
    default_budget: u64,
    budgets: HashMap<String, u64>,
    cost: Family<ClientLabels, Histogram>,
    over_budget: Family<ClientLabels, Counter>,
}

/// What [`Governance::explain`] tells a caller about a mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The cost of the read the explanation is for.
    pub cost: Cost,
    /// The caller's client's budget; 0: none.
    pub budget: u64,
    /// Whether the allow list lets the caller's client read with the mask (always with `off`).
    pub mask_allowed: bool,
}

impl Governance {
    /// `view` is the view's schema; the allow lists parse against it.
    pub fn new(
        view: &ViewSchema,
        masks: &AllowedMaskSettings,
        budget: &BudgetSettings,
        registry: &mut Registry,
    ) -> Result<Self, String> {
        let mut allowed = HashMap::new();
        for (client, list) in &masks.clients {
            let mut parsed = HashSet::new();
            for text in list {
                let mask = parse_listed(view, text).map_err(|error| {
                    format!(
                        "allowed_masks.clients.{client}: {text:?}: {}",
                        error.user_message()
                    )
                })?;
                parsed.insert(mask);
            }
            allowed.insert(client.clone(), parsed);
        }
        let governance = Self {
            view: view.clone(),
            leaves: view.leaf_paths(),
            usage: RwLock::default(),
            reads: Family::default(),
            last_read: Family::default(),
            mask_mode: masks.mode,
            allowed,
            unlisted: Family::default(),
            logged: Mutex::default(),
            budget_mode: budget.mode,
            default_budget: budget.default,
            budgets: budget.clients.clone().into_iter().collect(),
            cost: Family::new_with_constructor(|| Histogram::new(COST_BUCKETS)),
            over_budget: Family::default(),
        };
        registry.register(
            "gateway_view",
            "The view this gateway serves, whose leaf paths the field reads name",
            Info::new(vec![("view".to_owned(), view.name().to_owned())]),
        );
        registry.register(
            "gateway_field_reads",
            "Served reads by BFF client and leaf path of the view the read mask selects",
            governance.reads.clone(),
        );
        registry.register(
            "gateway_field_last_read_seconds",
            "Unix time of the last served read of a leaf path by a BFF client",
            governance.last_read.clone(),
        );
        registry.register(
            "gateway_masks_unlisted",
            "Reads with a mask not on the client's list of allowed masks, by client",
            governance.unlisted.clone(),
        );
        registry.register(
            "gateway_request_cost",
            "The planned cost of reads (upstream calls × keys), by client",
            governance.cost.clone(),
        );
        registry.register(
            "gateway_over_budget",
            "Reads whose planned cost was over the client's fanout budget, by client",
            governance.over_budget.clone(),
        );
        Ok(governance)
    }

    /// The governance of `view` and the client names the authenticator identifies callers by,
    /// from a gateway's `[clients]`, `[allowed_masks]` and `[fanout_budget]`: the clients the
    /// allow lists and budgets name are always told apart.
    pub fn start(
        view: &ViewSchema,
        clients: &ClientSettings,
        masks: &AllowedMaskSettings,
        budget: &BudgetSettings,
        registry: &mut Registry,
    ) -> Result<(Self, ClientNames), String> {
        let governance = Self::new(view, masks, budget, registry)?;
        let names = ClientNames::new(clients, &Self::configured_clients(masks, budget))?;
        Ok((governance, names))
    }

    /// The client names the allow lists and budgets configure, which must be told apart.
    pub fn configured_clients(masks: &AllowedMaskSettings, budget: &BudgetSettings) -> Vec<String> {
        let mut names: Vec<String> = masks
            .clients
            .keys()
            .chain(budget.clients.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The budget of `client`; 0: none.
    fn budget_of(&self, client: &Client) -> u64 {
        self.budgets
            .get(client.name())
            .copied()
            .unwrap_or(self.default_budget)
    }

    fn is_listed(&self, client: &Client, mask: &Mask) -> bool {
        self.allowed
            .get(client.name())
            .is_some_and(|masks| masks.contains(mask))
    }

    /// Checks a read of `client` with `mask` at the planned `cost` against the allow list and
    /// the budget, and measures its cost. `rpc` names the read in the log.
    pub fn admit(
        &self,
        rpc: &'static str,
        client: &Client,
        mask: &Mask,
        cost: Cost,
    ) -> Result<Admitted, Status> {
        let usage = self.usage_of(&client.shared_name());
        if self.mask_mode != MaskMode::Off && !self.is_listed(client, mask) {
            usage.unlisted.inc();
            if self.mask_mode == MaskMode::Enforce {
                tracing::info!(
                    target: "audit",
                    rpc,
                    client = client.name(),
                    client_version = client.version(),
                    mask = %mask,
                    "read refused: the mask is not on the client's list"
                );
                return Err(Status::permission_denied(format!(
                    "client {:?} may not read with the mask {:?}: it is not on the client's list \
                     of allowed masks",
                    client.name(),
                    mask.to_string()
                )));
            }
            self.log_unlisted(rpc, client, mask);
        }
        let total = cost.total();
        usage.cost.observe(total as f64);
        let budget = self.budget_of(client);
        if budget > 0 && total > budget {
            usage.over_budget.inc();
            if self.budget_mode == BudgetMode::Enforce {
                tracing::info!(
                    target: "audit",
                    rpc,
                    client = client.name(),
                    client_version = client.version(),
                    cost = total,
                    budget,
                    "read refused: over the client's fanout budget"
                );
                return Err(Status::resource_exhausted(format!(
                    "this read's planned cost is {cost}, over the fanout budget of {budget} of \
                     client {:?}: ask for fewer fields or fewer tracks",
                    client.name()
                )));
            }
        }
        Ok(Admitted {
            usage,
            touched: self.touched(mask),
        })
    }

    /// What [`Governance::admit`] would say of a read of `client` with `mask` at `cost`.
    pub fn explain(&self, client: &Client, mask: &Mask, cost: Cost) -> Verdict {
        Verdict {
            cost,
            budget: self.budget_of(client),
            mask_allowed: self.mask_mode == MaskMode::Off || self.is_listed(client, mask),
        }
    }

    /// Logs an unlisted mask once per client and mask (a bounded memory of them).
    fn log_unlisted(&self, rpc: &'static str, client: &Client, mask: &Mask) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() >= LOGGED_CAPACITY {
            logged.clear();
        }
        if logged.insert((client.shared_name(), mask.clone())) {
            tracing::warn!(
                rpc,
                client = client.name(),
                client_version = client.version(),
                mask = %mask,
                "a read with a mask not on the client's list of allowed masks"
            );
        }
    }

    /// The indexes of the leaf paths `mask` selects or reaches into.
    fn touched(&self, mask: &Mask) -> Vec<u16> {
        self.leaves
            .iter()
            .enumerate()
            .filter(|(_, leaf)| mask.touches(leaf))
            .map(|(index, _)| index as u16)
            .collect()
    }

    fn usage_of(&self, client: &Arc<str>) -> Arc<ClientUsage> {
        if let Some(usage) = self
            .usage
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(client)
        {
            return usage.clone();
        }
        let mut usage = self.usage.write().unwrap_or_else(|e| e.into_inner());
        usage
            .entry(client.clone())
            .or_insert_with(|| {
                let labels = |path: &String| ReadLabels {
                    client: client.to_string(),
                    path: path.clone(),
                };
                let by_client = ClientLabels {
                    client: client.to_string(),
                };
                Arc::new(ClientUsage {
                    cost: self.cost.get_or_create(&by_client).clone(),
                    over_budget: self.over_budget.get_or_create(&by_client).clone(),
                    unlisted: self.unlisted.get_or_create(&by_client).clone(),
                    reads: self
                        .leaves
                        .iter()
                        .map(|path| self.reads.get_or_create(&labels(path)).clone())
                        .collect(),
                    last_read: self
                        .leaves
                        .iter()
                        .map(|path| self.last_read.get_or_create(&labels(path)).clone())
                        .collect(),
                })
            })
            .clone()
    }

    /// The view's leaf paths, which field reads are counted by.
    pub fn leaf_paths(&self) -> &[String] {
        &self.leaves
    }

    /// The view.
    pub fn view(&self) -> &ViewSchema {
        &self.view
    }
}

/// A read the allow list and the budget let through; [`Admitted::served`] counts its fields.
#[derive(Debug)]
#[must_use = "count the read with `served` once it is answered"]
pub struct Admitted {
    usage: Arc<ClientUsage>,
    touched: Vec<u16>,
}

impl Admitted {
    /// Counts the read in the field usage: it was answered.
    pub fn served(self) {
        let usage = &self.usage;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as i64);
        for &index in &self.touched {
            usage.reads[usize::from(index)].inc();
            usage.last_read[usize::from(index)].set(now);
        }
    }
}

/// A mask in an allow list: path form, `*` for the whole view.
fn parse_listed(view: &ViewSchema, text: &str) -> Result<Mask, MaskError> {
    let paths: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|path| !path.is_empty())
        .collect();
    view.parse_paths(paths)
}

/// Where a request's read mask came from, for its error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSource {
    /// The request's `read_mask` field.
    Field,
    /// The `x-read-mask` metadata.
    Header,
}

/// A read mask that cannot be used: which of the two places it came from, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", self.field())]
pub struct RequestedMaskError {
    pub from: MaskSource,
    pub message: String,
}

impl RequestedMaskError {
    /// `read_mask` or `x-read-mask`.
    pub fn field(&self) -> &'static str {
        match self.from {
            MaskSource::Field => "read_mask",
            MaskSource::Header => READ_MASK_HEADER,
        }
    }
}

/// The read mask of a request: its `read_mask` field, or the `x-read-mask` metadata in the
/// canonical JSON string form (`title,creator.followersCount`) when the field is unset.
/// Both at once is INVALID_ARGUMENT, whatever they say: one request has one mask.
pub fn requested_mask(
    view: &ViewSchema,
    metadata: &MetadataMap,
    field: Option<prost_types::FieldMask>,
) -> Result<Mask, RequestedMaskError> {
    let Some(header) = metadata.get(READ_MASK_HEADER) else {
        return view
            .parse_field_mask(field)
            .map_err(|error| RequestedMaskError {
                from: MaskSource::Field,
                message: error.user_message(),
            });
    };
    let header_error = |message: String| RequestedMaskError {
        from: MaskSource::Header,
        message,
    };
    if field.as_ref().is_some_and(|mask| !mask.paths.is_empty()) {
        return Err(header_error(
            "the request sets read_mask too: send the mask in one of the two".into(),
        ));
    }
    let text = header
        .to_str()
        .map_err(|_| header_error("must be ASCII".into()))?;
    view.parse_json(text.trim())
        .map_err(|error| header_error(error.user_message()))
}

#[cfg(test)]
mod tests;
