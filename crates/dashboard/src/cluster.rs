//! The Cluster page (operators): replication as this node sees it, and
//! each tenant's accounted store use against its budgets.
//!
//! Replication comes from the [`ClusterView`](crate::cluster_view::ClusterView)
//! the binary gives (none: one node, state in memory).

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use rbk_coordinator::state::query;

use crate::error::DashboardError;
use crate::pages::{Frame, render};
use crate::app::App;
use crate::cluster_view::ClusterStatus;
use crate::views::bytes;

/// One tenant's accounted use.
pub struct TenantRow {
    pub tenant: String,
    pub heads: u64,
    pub heads_used: String,
    pub heads_budget: String,
    pub actions: u64,
    pub actions_used: String,
    pub actions_budget: String,
}

#[derive(Template)]
#[template(path = "cluster.html")]
struct ClusterPage {
    frame: Frame,
    replicated: bool,
    status: ClusterStatus,
    builds: usize,
    running: usize,
    tenants: Vec<TenantRow>,
    total_used: String,
}

/// `GET /cluster`: operators only.
pub async fn cluster(State(app): State<App>, headers: HeaderMap) -> Result<Html<String>, DashboardError> {
    let s = app.sessions.check(&headers)?;
    s.operator()?;
    let eviction = app.coordinator.eviction();
    let (builds, running, usage) = query(&*app.coordinator.state, |m| {
        let mut tenants: std::collections::BTreeSet<String> = m.all_heads().map(|(k, _)| k.namespace.clone()).collect();
        tenants.extend(m.all_actions().map(|((ns, _), _)| ns.clone()));
        let usage: Vec<_> = tenants.into_iter().map(|t| { let u = rbk_coordinator::eviction::tenant_usage(m, &t); (t, u) }).collect();
        (m.builds_count(), m.running_builds().len(), usage)
    });
    let budget = |b: Option<u64>| b.map_or_else(|| "no budget".to_owned(), bytes);
    let total: u64 = usage.iter().map(|(_, u)| u.heads_bytes + u.actions_bytes).sum();
    let tenants = usage
        .into_iter()
        .map(|(t, u)| {
            let b = eviction.budget(&t);
            TenantRow {
                heads: u.heads,
                heads_used: bytes(u.heads_bytes),
                heads_budget: budget(b.heads_bytes),
                actions: u.actions,
                actions_used: bytes(u.actions_bytes),
                actions_budget: budget(b.actions_bytes),
                tenant: t,
            }
        })
        .collect();
    let (replicated, status) = match &app.cluster {
        Some(c) => (true, c.status()),
        None => (false, ClusterStatus::default()),
    };
    render("cluster", &ClusterPage { frame: Frame::of(&s, "cluster"), replicated, status, builds, running, tenants, total_used: bytes(total) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_view::MemberStatus;

    fn page(status: ClusterStatus) -> String {
        let frame = Frame { who: "operator".into(), operator: true, current: "cluster" };
        let p = ClusterPage { frame, replicated: true, status, builds: 0, running: 0, tenants: vec![], total_used: String::new() };
        render("cluster", &p).unwrap().0
    }

    fn member(id: u64, matched: Option<u64>, lag: Option<u64>) -> MemberStatus {
        MemberStatus { id, raft: format!("10.0.0.{id}:7071"), api: String::new(), voter: true, matched, lag }
    }

    #[test]
    fn the_leaders_page_shows_each_followers_match_index_and_lag() {
        let members = vec![member(1, Some(40), Some(0)), member(2, Some(40), Some(0)), member(3, Some(28), Some(12))];
        let html = page(ClusterStatus { node_id: 1, leader_id: 1, term: 2, applied_index: 40, last_index: 40, commit_index: 40, members });
        assert!(html.contains("<td class=\"lag\"><strong>12</strong> behind</td>"), "{html}");
        assert_eq!(html.matches("0 (in sync)").count(), 2);
    }

    #[test]
    fn a_followers_page_says_the_lag_is_known_on_the_leader() {
        let members = vec![member(1, None, None), member(2, None, None)];
        let html = page(ClusterStatus { node_id: 2, leader_id: 1, term: 2, applied_index: 40, last_index: 0, commit_index: 0, members });
        assert!(html.contains("known on the leader (node 1)"), "{html}");
        assert!(!html.contains("behind"));
    }
}
