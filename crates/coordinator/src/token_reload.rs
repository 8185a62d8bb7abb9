//! The token file is the source of truth for who may call: it is read at
//! start, again on SIGHUP, and again every `token_reload_ms` (a Kubernetes
//! Secret mounted as a file changes without a signal). Each time it
//! changed and parses, the new file is published here; whoever applies it
//! (the single node, or the Raft leader) turns it into one
//! `Command::SetTokens`, which revokes every token no longer in it on every
//! node. A file that does not parse is not applied: the tokens in force
//! stay, and the error (which never shows a token) is logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::{Auth, TokenFile};

/// Publishes the token file at `path` each time it changes; starts with
/// `initial` (the file as read at start). `every`: the periodic re-read
/// (`None`: only on SIGHUP).
pub fn watch_token_file(path: PathBuf, initial: TokenFile, every: Option<Duration>) -> watch::Receiver<Arc<TokenFile>> {
    let (tx, rx) = watch::channel(Arc::new(initial));
    let mut last = std::fs::read(&path).ok().map(|b| blake3::hash(&b));
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP (the token file is re-read only periodically): {e}");
            None
        }
    };
    tokio::spawn(async move {
        loop {
            let signalled = tokio::select! {
                _ = async { match hangup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
                _ = async { match every { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => false,
                _ = tx.closed() => return,
            };
            match reread(&path, &mut last) {
                Some(file) => {
                    if tx.send(Arc::new(file)).is_err() {
                        return;
                    }
                }
                None if signalled => tracing::info!(path = %path.display(), "SIGHUP: no new token file to apply"),
                None => {}
            }
        }
    });
    rx
}

/// The file at `path` if it changed since `last` (its hash) and parses;
/// errors are logged (never with a token) and leave `last` as it was.
fn reread(path: &std::path::Path, last: &mut Option<blake3::Hash>) -> Option<TokenFile> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(path = %path.display(), "re-reading the token file: {e}; the tokens in force stay");
            return None;
        }
    };
    let hash = blake3::hash(&bytes);
    if *last == Some(hash) {
        return None;
    }
    match TokenFile::parse(&String::from_utf8_lossy(&bytes), path) {
        Ok(file) => {
            *last = Some(hash);
            tracing::info!(
                path = %path.display(),
                tenants = file.tenants.len(),
                workers = file.workers.len(),
                "token file changed: applying it (tokens no longer in it are revoked)"
            );
            Some(file)
        }
        Err(e) => {
            tracing::error!("{e}; the tokens in force stay");
            None
        }
    }
}

/// Installs every new token file into a single (unreplicated) coordinator's
/// state. A replicated one installs on its leader only (`rbk_raft::leadership`).
pub fn install_changes(auth: Auth, mut files: watch::Receiver<Arc<TokenFile>>) {
    tokio::spawn(async move {
        while files.changed().await.is_ok() {
            let file = files.borrow_and_update().clone();
            if let Err(e) = auth.install(&file).await {
                tracing::error!("applying the token file: {e}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryState, query};

    const A: &str = "aaaaaaaaaaaaaaaa-token";

    #[tokio::test]
    async fn a_token_removed_from_the_file_is_revoked_at_the_next_re_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, format!("[tenants]\n\"{A}\" = \"team-a\"\n")).unwrap();
        let state = Arc::new(MemoryState::new());
        let auth = Auth::new(state.clone());
        let initial = TokenFile::load(&path).unwrap();
        auth.install(&initial).await.unwrap();
        let mut files = watch_token_file(path.clone(), initial, Some(Duration::from_millis(20)));
        std::fs::write(&path, "[tenants]\n").unwrap();
        files.changed().await.unwrap();
        let file = files.borrow_and_update().clone();
        auth.install(&file).await.unwrap();
        assert!(query(&*state, |m| m.token_revoked(&crate::auth::token_hash(A))));
    }

    #[test]
    fn a_file_that_does_not_parse_is_not_applied_and_an_unchanged_one_not_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, format!("[tenants]\n\"{A}\" = \"team-a\"\n")).unwrap();
        let mut last = None;
        assert!(reread(&path, &mut last).is_some());
        assert!(reread(&path, &mut last).is_none(), "unchanged");
        std::fs::write(&path, "[tenants\n").unwrap();
        assert!(reread(&path, &mut last).is_none(), "a broken file was applied");
        std::fs::write(&path, "[tenants]\n").unwrap();
        assert!(reread(&path, &mut last).unwrap().tenants.is_empty());
    }
}
