//! Step execution on a worker: overlay rootfs, OCI runtime, mounts, layer capture.
