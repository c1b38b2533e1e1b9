//! Tests of the miners beyond the parity files: naive oracles, properties, errors.
