//! The gateway's own words: `help`, `whoami`, `pods [namespace]`, `logs TARGET [...]`.

use jitsh_broker_policy::{Action, Effect, Mode, Policy, Request, Subject, Target};

use super::Ctx;
use crate::audit::Event;
use crate::ids::CommandId;
use crate::intent::{LogOptions, TargetSpec};

/// `help`.
pub(crate) const HELP: &str = "\
jitsh — run policy-checked commands in Kubernetes pods as yourself.

  ssh USER@GATEWAY [namespace/]pod[/container] [--] COMMAND...   run one command
  ssh USER@GATEWAY pods [namespace]                              pods you can reach
  ssh USER@GATEWAY logs [namespace/]pod[/container] [-f] [--tail N] [--since 10m] [--previous] [--timestamps]
  ssh USER@GATEWAY whoami                                        identity, certificate, grants
  ssh USER@GATEWAY request [ns/]pod --reason TEXT [--wait] -- COMMAND...   ask to run one command once
  ssh USER@GATEWAY request --rule NAME [--for 30m] --reason TEXT [--wait]  ask for a grant of a rule
  ssh USER@GATEWAY requests [--all] [--json]                     mine, and those I may approve
  ssh USER@GATEWAY approve ID [--comment TEXT] | deny ID --reason TEXT | revoke ID
  ssh USER@GATEWAY help                                          this text
  scp USER@GATEWAY:/namespace/pod/container/fs/PATH .             pull a file the policy allows (also scp -O)
  scp USER@GATEWAY:/namespace/pod/container/logs/current.log .    pull a pod log (previous.log: before the restart)
  sftp USER@GATEWAY                                               browse that read-only tree
  ssh -L 8080:pod.namespace:8080 USER@GATEWAY                     forward a port the policy allows

Command lines are parsed, not passed to a shell: quoting works, but ; & | > < $ ` and globs are
refused unless the policy allows pipelines. A denied command exits with status 126. A command
that needs approval asks for it and waits; approvers see it with 'requests'.
";

/// `whoami`: identity, certificate and every grant of the policy.
pub(crate) async fn whoami(ctx: &Ctx<'_>) -> u32 {
    let id = ctx.id;
    let until = humantime::format_rfc3339_seconds(id.valid_before());
    let mut msg = format!(
        "identity: {}\nuser: {}\ngroups: {}\ncertificate: serial {}, key id {}, valid until {until}\n",
        id.identity(),
        id.username(),
        id.groups().join(","),
        id.serial(),
        id.key_id(),
    );
    let grants = ctx.gw.policy().grants(&ctx.subject());
    if grants.is_empty() {
        msg.push_str("policy: grants you nothing\n");
    }
    let held = ctx
        .gw
        .broker()
        .held(&ctx.gw.policy(), &crate::broker::principal(id));
    for g in grants {
        let modes: Vec<&str> = g.modes.iter().map(|m| m.as_str()).collect();
        let grant = match held.iter().find(|(rule, _)| *rule == g.rule) {
            Some((_, rid)) => format!(" (granted by request {rid})"),
            None if g.requires_grant => format!(
                " (grant-only: ask with 'request --rule {} --for 30m --reason TEXT')",
                g.rule
            ),
            None => String::new(),
        };
        msg.push_str(&format!(
            "policy rule {}: {} on namespace {}{grant}\n",
            g.rule,
            modes.join(", "),
            g.namespaces.join(", ")
        ));
        if !g.commands.is_empty() {
            msg.push_str(&format!("  commands: {}\n", g.commands.join(" | ")));
        }
        if !g.files.is_empty() {
            msg.push_str(&format!("  files: {}\n", g.files.join(", ")));
        }
        if !g.ports.is_empty() {
            let ports: Vec<String> = g.ports.iter().map(u16::to_string).collect();
            msg.push_str(&format!("  ports: {}\n", ports.join(", ")));
        }
    }
    // Approvers see how many requests wait for them.
    let n = ctx
        .gw
        .broker()
        .waiting_for(&ctx.gw.policy(), &crate::broker::principal(id));
    if n > 0 {
        msg.push_str(&format!(
            "approvals: {n} request(s) wait for you (see 'requests', then 'approve ID' or 'deny ID --reason TEXT')\n"
        ));
    }
    ctx.print(&msg).await;
    0
}

/// `pods [namespace]`: the pods the user may list, with the modes the policy grants on each.
pub(crate) async fn pods(ctx: &Ctx<'_>, cid: &CommandId, namespace: Option<String>) -> u32 {
    let policy = ctx.gw.policy();
    let subject = ctx.subject();
    let namespaces: Vec<String> = match namespace {
        Some(ns) => vec![ns],
        None => {
            let mut v: Vec<String> = policy
                .grants(&subject)
                .into_iter()
                .flat_map(|g| g.namespaces)
                .filter(|n| n != "*")
                .collect();
            v.sort();
            v.dedup();
            if v.is_empty() {
                v.push(ctx.gw.settings().default_namespace.clone());
            }
            v
        }
    };
    let k = match ctx.impersonate(cid) {
        Ok(c) => c,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            return 1;
        }
    };
    let mut out = String::from("POD\tSTATUS\tCONTAINERS\tPOLICY\n");
    let mut failures = 0;
    for ns in &namespaces {
        match crate::kube::pods::list(&k, ns).await {
            Ok(list) => {
                for crate::kube::pods::Listed {
                    name: pod,
                    phase,
                    containers,
                } in list
                {
                    let target = Target {
                        namespace: ns.clone(),
                        pod: pod.clone(),
                        labels: Default::default(),
                        container: containers.first().cloned().unwrap_or_default(),
                    };
                    let modes = granted_modes(&policy, &subject, &target);
                    out.push_str(&format!(
                        "{ns}/{pod}\t{phase}\t{}\t{}\n",
                        containers.join(","),
                        if modes.is_empty() {
                            "-".into()
                        } else {
                            modes.join(",")
                        }
                    ));
                }
            }
            Err(e) => {
                failures += 1;
                ctx.say(&format!("namespace {ns}: {e}")).await;
            }
        }
    }
    ctx.print(&out).await;
    if failures == namespaces.len() { 1 } else { 0 }
}

fn granted_modes(policy: &Policy, subject: &Subject, target: &Target) -> Vec<&'static str> {
    let mut modes = Vec::new();
    if !policy
        .allowed_summary(subject, target, Mode::Exec)
        .is_empty()
    {
        modes.push("exec");
    }
    for m in [
        Mode::Shell,
        Mode::Logs,
        Mode::Files,
        Mode::Attach,
        Mode::PortForward,
        Mode::BreakGlass,
    ] {
        let d = policy.decide(&Request {
            subject,
            target,
            mode: m,
            action: Action::Session,
        });
        // Break-glass is granted when only its facts (reason, incident) are missing.
        if d.effect() != Effect::Deny || d.is_unmet_requirement() {
            modes.push(m.as_str());
        }
    }
    modes
}

/// `logs TARGET [-f] [--tail N] [--since D] [--previous] [--timestamps]`: pods/log as the user.
pub(crate) async fn logs(
    ctx: &Ctx<'_>,
    cid: &CommandId,
    target: &TargetSpec,
    options: &LogOptions,
) -> u32 {
    let (k, resolved) = match ctx.resolve(cid, target).await {
        Ok(x) => x,
        Err(e) => {
            ctx.say(&e.to_string()).await;
            return 1;
        }
    };
    let tgt = resolved.policy_target();
    let decision = ctx.gw.policy().permit_logs(&ctx.subject(), &tgt);
    let mut ev = Event {
        follow: Some(options.follow),
        ..ctx.target_event(cid, &resolved)
    };
    let place = format!("{}/{}", resolved.namespace, resolved.pod);
    let permit = match decision {
        Ok(p) => p,
        Err(d) => return ctx.deny("logs.denied", ev, &d, &place).await,
    };
    ev.rule = Some(permit.rule().to_owned());
    if let Err(e) = ctx.gw.audit_first("logs.allowed", &ev) {
        ctx.say(&e.to_string()).await;
        return 1;
    }
    ctx.clock
        .tighten(permit.limits().max_session, permit.limits().idle_timeout);
    let _hold = ctx.clock.hold(&permit);
    let res = crate::kube::logs::stream(&k, &permit, options, ctx.out()).await;
    let code = match &res {
        Ok(bytes) => {
            ev.bytes = Some(*bytes);
            0
        }
        Err(e) => {
            ctx.say(&e.to_string()).await;
            ev.error = Some(e.to_string());
            1
        }
    };
    ctx.gw.record("logs.end", &ev);
    code
}
