//! Build-wide settings of every RUN step, from `docker buildx build`'s
//! flags: `--network` (the mode of a RUN that names none), `--add-host`,
//! `--shm-size` and `--ulimit`. They go into each RUN's worker step, so
//! they are part of its payload and therefore of its cache key (a build
//! with other hosts or limits does not reuse a result made without them),
//! as BuildKit keys its exec ops by them.

use rbk_dockerfile as df;
use rbk_worker as wk;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunDefaults {
    /// The network of a RUN without `--network` (or `--network=default`);
    /// `None` is the worker's default, its own namespace with egress.
    pub network: Option<wk::Network>,
    pub container: wk::ContainerOptions,
}

impl RunDefaults {
    /// Applies the build's settings to `step`, the mapping of `run`.
    pub fn apply(&self, run: &df::RunStep, step: &mut wk::RunStep) {
        if let (df::Network::Default, Some(n)) = (run.network, self.network) {
            step.network = n;
        }
        step.container = self.container.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(network: df::Network) -> df::RunStep {
        df::RunStep {
            argv: vec!["true".into()],
            env: vec![],
            proxy_env: vec![],
            user: None,
            workdir: "/".into(),
            mounts: vec![],
            network,
            insecure: false,
        }
    }

    #[test]
    fn the_build_network_applies_only_to_runs_that_name_none() {
        let d = RunDefaults { network: Some(wk::Network::None), ..Default::default() };
        let mut plain = wk::RunStep::new(wk::Command::Exec(vec!["true".into()]));
        d.apply(&run(df::Network::Default), &mut plain);
        assert_eq!(plain.network, wk::Network::None);
        let mut own = wk::RunStep { network: wk::Network::Host, ..wk::RunStep::new(wk::Command::Exec(vec!["true".into()])) };
        d.apply(&run(df::Network::Host), &mut own);
        assert_eq!(own.network, wk::Network::Host);
    }
}
