//! The OCI image model: pull, import, unpack, layer diff, export.
