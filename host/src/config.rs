//! Configuration: raw YAML → spans → schema → validated connection model.
