//! The torchrun environment contract: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT` (and `TORCHELASTIC_USE_AGENT_STORE`, set when torchrun's agent already hosts the
//! TCPStore on the master port, so rank 0 must join it as a client rather than start one).

use crate::error::{DistError, Result};

/// Where this process sits in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldEnv {
    /// Global rank, 0 ≤ rank < world_size.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Rank on this host (selects the CUDA device).
    pub local_rank: usize,
    /// Host of the rendezvous store.
    pub master_addr: String,
    /// Port of the rendezvous store.
    pub master_port: u16,
    /// The store is hosted by torchrun's agent: every rank is a client.
    pub agent_store: bool,
}

impl WorldEnv {
    /// Reads the environment of the current process; None when `WORLD_SIZE` is unset (a plain,
    /// single-process run).
    pub fn from_env() -> Result<Option<WorldEnv>> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get` (testable without touching the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<WorldEnv>> {
        let Some(world) = get("WORLD_SIZE") else { return Ok(None) };
        let int = |var: &'static str, value: Option<String>| -> Result<usize> {
            let value = value.ok_or_else(|| DistError::Env { var, message: "not set (WORLD_SIZE is, so every torchrun variable must be)".into() })?;
            value.trim().parse().map_err(|_| DistError::Env { var, message: format!("'{value}' is not a non-negative integer") })
        };
        let world_size = int("WORLD_SIZE", Some(world))?;
        if world_size == 0 {
            return Err(DistError::Env { var: "WORLD_SIZE", message: "must be at least 1".into() });
        }
        let rank = int("RANK", get("RANK"))?;
        if rank >= world_size {
            return Err(DistError::Env { var: "RANK", message: format!("{rank} is not below WORLD_SIZE {world_size}") });
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => int("LOCAL_RANK", Some(v))?,
            None => rank,
        };
        let master_addr = get("MASTER_ADDR").filter(|a| !a.trim().is_empty()).ok_or(DistError::Env { var: "MASTER_ADDR", message: "not set".into() })?;
        let port = int("MASTER_PORT", get("MASTER_PORT"))?;
        let master_port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or(DistError::Env { var: "MASTER_PORT", message: format!("{port} is not a TCP port") })?;
        let agent_store = get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        Ok(Some(WorldEnv { rank, world_size, local_rank, master_addr: master_addr.trim().to_string(), master_port, agent_store }))
    }

    /// The environment of rank `rank` in a local job of `world_size` processes (what
    /// `proxima train --nproc N` hands each child).
    pub fn local(rank: usize, world_size: usize, port: u16) -> WorldEnv {
        WorldEnv { rank, world_size, local_rank: rank, master_addr: "127.0.0.1".into(), master_port: port, agent_store: false }
    }

    /// The variables that describe this process to a child (`KEY=value` pairs).
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RANK", self.rank.to_string()),
            ("WORLD_SIZE", self.world_size.to_string()),
            ("LOCAL_RANK", self.local_rank.to_string()),
            ("LOCAL_WORLD_SIZE", self.world_size.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> impl Fn(&str) -> Option<String> + use<K, V> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn no_world_size_is_a_single_process_run() {
        assert_eq!(WorldEnv::from_lookup(lookup(&[("RANK", "3")])).unwrap(), None);
    }

    #[test]
    fn reads_a_torchrun_environment() {
        let env = WorldEnv::from_lookup(lookup(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(env, WorldEnv { rank: 2, world_size: 4, local_rank: 0, master_addr: "node0".into(), master_port: 29500, agent_store: true });
        let round_trip = WorldEnv::from_lookup(lookup(&env.vars())).unwrap().unwrap();
        assert_eq!(round_trip, WorldEnv { agent_store: false, ..env });
    }

    #[test]
    fn bad_variables_name_themselves() {
        let base = [("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")];
        let with = |k: &str, v: &str| base.iter().map(|&(a, b)| (a.to_string(), if a == k { v.to_string() } else { b.to_string() })).collect::<Vec<_>>();
        let var_of = |pairs: Vec<(String, String)>| match WorldEnv::from_lookup(lookup(&pairs)) {
            Err(DistError::Env { var, .. }) => var,
            other => panic!("expected an Env error, got {other:?}"),
        };
        assert_eq!(var_of(with("RANK", "2")), "RANK");
        assert_eq!(var_of(with("RANK", "x")), "RANK");
        assert_eq!(var_of(with("WORLD_SIZE", "0")), "WORLD_SIZE");
        assert_eq!(var_of(with("MASTER_PORT", "70000")), "MASTER_PORT");
        assert_eq!(var_of(with("MASTER_ADDR", " ")), "MASTER_ADDR");
        assert_eq!(var_of(base.iter().filter(|(k, _)| *k != "RANK").map(|(k, v)| (k.to_string(), v.to_string())).collect()), "RANK");
        // LOCAL_RANK defaults to RANK (one host).
        assert_eq!(WorldEnv::from_lookup(lookup(&base)).unwrap().unwrap().local_rank, 1);
    }
}
