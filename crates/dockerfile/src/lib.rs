//! The Dockerfile frontend: Dockerfile + context + options → build graph with cache keys.
