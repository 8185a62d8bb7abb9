//! Directory snapshots: a tree captured as a manifest plus packed contents (see issue 3).
