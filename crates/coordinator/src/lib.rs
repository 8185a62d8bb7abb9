//! The coordinator: build API, scheduling, action cache, cache-mount heads.
