# Recipes for working on the repository; `just --list` shows them.

# List the recipes.
default:
    @just --list

# Run the whole local topology in one process: every service on its own port, SQLite, seed data; Ctrl-C stops it.
up:
    cargo run -p topology

# Run every test; with TEST_DATABASE_URL set, the storage tests also run on PostgreSQL.
test:
    cargo test --workspace

# Check formatting and lints, with warnings as errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
