//! Faults on a running lab: a fault's actions (from `faults` or `compose`,
//! pure) executed in order and recorded in the state file, undone on
//! failure and by `clear`.

use anyhow::Context as _;

use super::processes::{Listen, daemon_proc};
use super::{Lab, STOP_GRACE};
use crate::compose::LabFault;
use crate::faults::{Action, Daemon, RuleOp};
use crate::state::LabState;
use crate::system;
use crate::topology::WEB_PORT;

impl Lab {
    /// Injects `fault` (from the catalogue or composed) into a lab that has
    /// none active, and records its name. If an action fails, the fault's
    /// undo runs before the error is returned.
    pub async fn inject(
        &self,
        state: &mut LabState,
        fault: impl Into<LabFault>,
    ) -> anyhow::Result<()> {
        let fault: LabFault = fault.into();
        let applied = async {
            for action in fault.apply(state.proxy_mode)? {
                self.execute(state, &action).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = applied {
            for action in fault.clear(state.proxy_mode).unwrap_or_default() {
                let _ = self.execute(state, &action).await;
            }
            return Err(e.context(format!("injecting {fault}")));
        }
        state.fault = Some(fault.to_string());
        self.dir.save(state)
    }

    /// Undoes the active fault, if any; returns its name.
    pub async fn clear(&self, state: &mut LabState) -> anyhow::Result<Option<String>> {
        let Some(name) = state.fault.clone() else {
            return Ok(None);
        };
        let fault: LabFault = name.parse()?;
        for action in fault.clear(state.proxy_mode)? {
            self.execute(state, &action)
                .await
                .with_context(|| format!("clearing {fault}"))?;
        }
        state.fault = None;
        self.dir.save(state)?;
        Ok(Some(name))
    }

    async fn execute(&self, state: &mut LabState, action: &Action) -> anyhow::Result<()> {
        match action {
            Action::Ip { netns, commands } => system::ip_batch(Some(netns), commands).await,
            Action::Iptables { netns, ruleset } => system::iptables_restore(netns, ruleset).await,
            Action::Nft { netns, script } => system::nft_script(netns, script).await,
            Action::Rule {
                netns,
                op,
                chain,
                args,
            } => system::iptables_rule(netns, *op == RuleOp::Insert, chain, args).await,
            Action::Sysctl { netns, key, value } => system::sysctl(netns, &[(key, value)]).await,
            Action::Stop(daemon) => {
                let key = daemon_proc(*daemon).key();
                if let Some(rec) = state.processes.remove(&key) {
                    system::stop(&[rec], STOP_GRACE).await;
                }
                self.dir.save(state)
            }
            Action::Start(daemon) => {
                let p = daemon_proc(*daemon);
                if state.processes.get(&p.key()).is_some_and(system::alive) {
                    return Ok(());
                }
                let child = self.start(state, p)?;
                let listen = match daemon {
                    Daemon::Web { .. } | Daemon::StalledWeb => Listen::Tcp(WEB_PORT),
                    Daemon::ClusterDns | Daemon::BrokenClusterDns(_) => Listen::Udp(53),
                    Daemon::Holder(h) => Listen::Connected(WEB_PORT, usize::from(h.count())),
                };
                self.wait_listening(state, &mut [(p.key(), child)], &p.key(), listen)
                    .await
            }
            Action::ResolvConf { netns, contents } => system::write_resolv_conf(netns, contents),
            Action::Inventory {
                kube_proxy_pending,
                client_dns_wrong,
            } => self.write_inventory(*kube_proxy_pending, *client_dns_wrong),
            Action::ConntrackFill { netns } => {
                let out = self.in_netns(netns, "conntrack-fill").await?;
                eprint!("{out}");
                Ok(())
            }
            Action::ConntrackFlush { netns } => {
                self.in_netns(netns, "conntrack-flush").await.map(drop)
            }
            Action::Settle {
                netns,
                device,
                carrier,
            } => system::settle_carrier(netns, device, *carrier).await,
        }
    }

    /// Runs a hidden `meshctl lab` helper inside a namespace.
    async fn in_netns(&self, netns: &str, helper: &str) -> anyhow::Result<String> {
        let meshctl = self.meshctl.display().to_string();
        system::run(
            "ip",
            &["netns", "exec", netns, &meshctl, "lab", helper],
            None,
        )
        .await
    }
}
