//! Tests of the pair losses beyond the parity files: naive oracles, properties, errors.
