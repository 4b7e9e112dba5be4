//! Approvals: who may approve, which approvals count, and what an approved permit binds.

use jitsh_broker_policy::{
    ApprovalRefused, Approvals, Effect, Policy, Principal, Recheck, Subject, Target,
    parse_command_line,
};

const POLICY: &str = "apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules:
- name: ops
  groups: [oncall, leads, sre]
  targets: [{namespaces: [payments]}]
  modes: [exec]
  commands: ['date']
  approvalRequired: ['kill -TERM <int>']
  approval: {approvers: 2, from: [leads, sre], autoApprove: {groups: [sre]}}
";

fn person(identity: &str, user: &str, group: &str) -> Principal {
    Principal {
        identity: identity.into(),
        subject: Subject {
            user: user.into(),
            groups: vec![group.into()],
            grants: Vec::new(),
        },
    }
}

fn pod() -> Target {
    Target {
        namespace: "payments".into(),
        pod: "api-0".into(),
        labels: Default::default(),
        container: "app".into(),
    }
}

fn kill(pid: &str) -> Vec<Vec<String>> {
    vec![vec!["kill".into(), "-TERM".into(), pid.into()]]
}

#[test]
fn two_distinct_approvers_never_the_requester_each_counted_once() {
    let p = Policy::from_yaml(POLICY).unwrap();
    let alice = person("alice@example.com", "alice", "oncall");
    // The same person under another SSH user name (or another identity with her user name).
    let alice_again = person("alice@example.com", "alice2", "leads");
    let bob = person("bob@example.com", "bob", "leads");
    let carol = person("carol@example.com", "carol", "leads");
    let mallory = person("mallory@example.com", "mallory", "oncall");

    assert_eq!(
        p.may_approve("ops", &alice, &alice_again),
        Err(ApprovalRefused::OwnRequest)
    );
    assert!(matches!(
        p.may_approve("ops", &alice, &mallory),
        Err(ApprovalRefused::NotAnApprover { .. })
    ));
    assert_eq!(
        p.may_approve("nope", &alice, &bob),
        Err(ApprovalRefused::NoApproval("nope".into()))
    );
    let counted = |a: &[Principal]| p.approvals_counted("ops", &alice, a);
    assert_eq!(counted(std::slice::from_ref(&bob)), (1, 2));
    assert_eq!(
        counted(&[bob.clone(), bob.clone()]),
        (1, 2),
        "twice is once"
    );
    assert_eq!(
        counted(&[bob.clone(), alice_again.clone(), mallory.clone()]),
        (1, 2)
    );
    assert_eq!(counted(&[bob.clone(), carol.clone()]), (2, 2));

    let line = parse_command_line("kill -TERM 42").unwrap();
    let argv = kill("42");
    let target = pod();
    let ask = |approvals: &[Principal]| {
        let a = approvals.to_vec();
        p.permit_approved_exec(
            &alice,
            &target,
            &line,
            &Approvals {
                requester: &alice,
                target: &target,
                stages: &argv,
                approvals: &a,
                incident: None,
            },
        )
    };
    let d = ask(&[bob.clone(), bob.clone()]).unwrap_err();
    assert_eq!(d.effect(), Effect::NeedsApproval);
    assert!(d.reasons()[0].contains("1 of 2 approvals"), "{d:?}");
    let permit = ask(&[bob.clone(), carol.clone()]).unwrap();
    assert!(permit.is_approved());
    assert_eq!(permit.stages(), argv.as_slice());
    assert_eq!(permit.rule(), "ops");
}

#[test]
fn an_approval_binds_requester_target_and_argv() {
    let p = Policy::from_yaml(POLICY).unwrap();
    let alice = person("alice", "alice", "oncall");
    let bob = person("bob", "bob", "leads");
    let carol = person("carol", "carol", "leads");
    let approvals = [bob.clone(), carol.clone()];
    let target = pod();
    let argv = kill("42");
    let asked = Approvals {
        requester: &alice,
        target: &target,
        stages: &argv,
        approvals: &approvals,
        incident: None,
    };
    let line = parse_command_line("kill -TERM 42").unwrap();
    let other_line = parse_command_line("kill -TERM 1").unwrap();
    let mut other_pod = pod();
    other_pod.pod = "api-1".into();
    let why = |r: Result<_, jitsh_broker_policy::Decision>| r.unwrap_err().reasons().join(" ");
    assert!(
        why(p.permit_approved_exec(&alice, &target, &other_line, &asked))
            .contains("another command")
    );
    assert!(
        why(p.permit_approved_exec(&alice, &other_pod, &line, &asked)).contains("another target")
    );
    let mallory = person("mallory", "mallory", "oncall");
    assert!(why(p.permit_approved_exec(&mallory, &target, &line, &asked)).contains("someone else"));
    // A command that needs no approval is decided as usual.
    let date = parse_command_line("date").unwrap();
    assert!(
        !p.permit_approved_exec(&alice, &target, &date, &asked)
            .unwrap()
            .is_approved()
    );
}

#[test]
fn auto_approval_and_recheck_after_a_reload() {
    let p = Policy::from_yaml(POLICY).unwrap();
    let dave = person("dave", "dave", "sre");
    assert_eq!(
        p.auto_approval("ops", &dave.subject, None).as_deref(),
        Some("requester is in group sre")
    );
    let target = pod();
    let argv = kill("7");
    let line = parse_command_line("kill -TERM 7").unwrap();
    let permit = p
        .permit_approved_exec(
            &dave,
            &target,
            &line,
            &Approvals {
                requester: &dave,
                target: &target,
                stages: &argv,
                approvals: &[],
                incident: None,
            },
        )
        .unwrap();
    assert!(
        permit.recheck(&p, &[]).is_ok(),
        "the same policy still allows it"
    );
    // A reload that takes away the auto-approval ends it; one that needs no approval keeps it.
    let stricter =
        Policy::from_yaml(&POLICY.replace(", autoApprove: {groups: [sre]}", "")).unwrap();
    assert!(permit.recheck(&stricter, &[]).is_err());
    let looser = Policy::from_yaml(
        &POLICY
            .replace(
                "approvalRequired: ['kill -TERM <int>']",
                "commands: ['date', 'kill -TERM <int>']",
            )
            .replace("  commands: ['date']\n", ""),
    )
    .unwrap();
    assert!(permit.recheck(&looser, &[]).is_ok());
}
