-- One database per foundation service (compose.postgres.yaml).
CREATE DATABASE tracks OWNER gateways;
CREATE DATABASE likes OWNER gateways;
CREATE DATABASE follows OWNER gateways;
CREATE DATABASE counts OWNER gateways;
