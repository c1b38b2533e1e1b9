//! Tests of the classification losses beyond the parity files: naive oracles, properties, errors.
