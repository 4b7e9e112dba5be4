//! Approvals: who may approve a request, which approvals count, and the permit of a command
//! that needed approval — issued only when the approvals recorded for exactly that requester,
//! target and argv suffice under the policy in force.
//!
//! ```
//! use jitsh_broker_policy::{Approvals, Policy, Principal, Subject, Target, parse_command_line};
//! let policy = Policy::from_yaml(
//!     "apiVersion: jitsh.dev/v1alpha1\nkind: Policy\nrules:\n- name: ops\n  \
//!      groups: [oncall, leads]\n  targets: [{namespaces: [payments]}]\n  modes: [exec]\n  \
//!      approvalRequired: ['kill -TERM <int>']\n  approval: {approvers: 1, from: [leads]}\n",
//! ).unwrap();
//! let person = |id: &str, g: &str| Principal {
//!     identity: id.into(),
//!     subject: Subject { user: id.into(), groups: vec![g.into()], grants: Vec::new() },
//! };
//! let (alice, bob) = (person("alice", "oncall"), person("bob", "leads"));
//! let pod = Target { namespace: "payments".into(), pod: "api-0".into(),
//!     labels: Default::default(), container: "app".into() };
//! let line = parse_command_line("kill -TERM 42").unwrap();
//! let argv = vec![vec!["kill".to_string(), "-TERM".into(), "42".into()]];
//! assert!(policy.may_approve("ops", &alice, &alice).is_err()); // never your own
//! assert!(policy.may_approve("ops", &alice, &bob).is_ok());
//! let mut asked = Approvals { requester: &alice, target: &pod, stages: &argv,
//!     approvals: &[], incident: None };
//! assert!(policy.permit_approved_exec(&alice, &pod, &line, &asked).is_err());
//! let approvals = [bob.clone()];
//! asked.approvals = &approvals;
//! let permit = policy.permit_approved_exec(&alice, &pod, &line, &asked).unwrap();
//! assert_eq!(permit.stages(), argv.as_slice());
//! // The approval binds the argv: another pid is another request.
//! let other = parse_command_line("kill -TERM 43").unwrap();
//! assert!(policy.permit_approved_exec(&alice, &pod, &other, &asked).is_err());
//! ```

use std::collections::BTreeSet;

use super::permit::{Exec, ExecPermit, Permit};
use super::{Action, Approval, Decision, Effect, Mode, Policy, Request, Rule, Subject, Target};
use crate::command_line::CommandLine;

/// A person as their verified certificate names them: the identity (the certificate's key id,
/// which names the human) and the subject the policy decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The identity (the same person under any SSH user name).
    pub identity: String,
    /// User name and groups.
    pub subject: Subject,
}

impl Principal {
    /// Whether two principals are the same person: the same identity or the same user name.
    pub fn same_person(&self, other: &Principal) -> bool {
        self.identity == other.identity || self.subject.user == other.subject.user
    }
}

/// A request for one exact command as the broker stored it, with what was recorded on it.
#[derive(Debug, Clone, Copy)]
pub struct Approvals<'a> {
    /// Who asked.
    pub requester: &'a Principal,
    /// Where (namespace, pod, container are compared).
    pub target: &'a Target,
    /// The argv of each stage that was asked for.
    pub stages: &'a [Vec<String>],
    /// Who approved, in order (each person is counted once; ineligible ones not at all).
    pub approvals: &'a [Principal],
    /// The incident the request named.
    pub incident: Option<&'a str>,
}

/// Why someone may not approve a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalRefused {
    /// The rule does not exist (any more) or needs no approval.
    #[error("policy rule {0} does not take approvals")]
    NoApproval(String),
    /// Nobody approves their own request.
    #[error("you cannot approve your own request")]
    OwnRequest,
    /// Not a member of the approver groups.
    #[error("only members of {} may approve requests under policy rule {rule}", .from.join(", "))]
    NotAnApprover {
        /// The rule.
        rule: String,
        /// Its approver groups.
        from: Vec<String>,
    },
}

impl Policy {
    fn rule_named(&self, name: &str) -> Option<&Rule> {
        self.rules().iter().find(|r| r.name() == name)
    }

    /// The approval settings of `rule`, if it takes approvals.
    pub fn approval_of(&self, rule: &str) -> Option<&Approval> {
        self.rule_named(rule).and_then(Rule::approval)
    }

    /// Whether `who` may approve (or deny) a request `requester` made under `rule`: a member of
    /// the rule's approver groups, and never the requester.
    pub fn may_approve(
        &self,
        rule: &str,
        requester: &Principal,
        who: &Principal,
    ) -> Result<(), ApprovalRefused> {
        let a = self
            .approval_of(rule)
            .ok_or_else(|| ApprovalRefused::NoApproval(rule.to_owned()))?;
        if who.same_person(requester) {
            return Err(ApprovalRefused::OwnRequest);
        }
        if !who.subject.groups.iter().any(|g| a.from.contains(g)) {
            return Err(ApprovalRefused::NotAnApprover {
                rule: rule.to_owned(),
                from: a.from.clone(),
            });
        }
        Ok(())
    }

    /// How many of `approvals` count under `rule` (distinct people who may approve), and how
    /// many are needed.
    pub fn approvals_counted(
        &self,
        rule: &str,
        requester: &Principal,
        approvals: &[Principal],
    ) -> (u32, u32) {
        let need = self.approval_of(rule).map_or(u32::MAX, |a| a.approvers);
        let people: BTreeSet<&str> = approvals
            .iter()
            .filter(|a| self.may_approve(rule, requester, a).is_ok())
            .map(|a| a.identity.as_str())
            .collect();
        (u32::try_from(people.len()).unwrap_or(u32::MAX), need)
    }

    /// The `autoApprove` condition of `rule` that a request by `requester` (naming `incident`)
    /// meets, written for the audit log.
    pub fn auto_approval(
        &self,
        rule: &str,
        requester: &Subject,
        incident: Option<&str>,
    ) -> Option<String> {
        let auto = &self.approval_of(rule)?.auto_approve;
        if let Some(g) = requester.groups.iter().find(|g| auto.groups.contains(g)) {
            return Some(format!("requester is in group {g}"));
        }
        if auto.incident && incident.is_some_and(|i| !i.trim().is_empty()) {
            return Some("the request names an incident".to_owned());
        }
        None
    }

    /// Whether `subject` may ask for a grant of `rule`, and for how long at most: the rule
    /// exists, is grant-only (`requiresGrant`), and names the subject by user or group.
    pub fn grantable(&self, subject: &Subject, rule: &str) -> Result<std::time::Duration, String> {
        let Some(r) = self.rule_named(rule) else {
            return Err(format!("there is no policy rule {rule}"));
        };
        if !r.requires_grant() {
            return Err(format!(
                "policy rule {rule} is not grant-only: it needs no grant"
            ));
        }
        let named =
            r.users.contains(&subject.user) || r.groups.iter().any(|g| subject.groups.contains(g));
        if !named {
            return Err(format!("policy rule {rule} does not name you"));
        }
        Ok(r.max_grant())
    }

    /// Whether a grant of `rule` to `requester`, with these approvals, stands under the policy
    /// in force: the rule is still grant-only and names the requester, and enough distinct
    /// approvers (never the requester) approved it, or its `autoApprove` condition holds.
    pub fn grant_stands(
        &self,
        rule: &str,
        requester: &Principal,
        approvals: &[Principal],
        incident: Option<&str>,
    ) -> bool {
        self.grantable(&requester.subject, rule).is_ok()
            && self
                .approved_enough(
                    rule,
                    &Approvals {
                        requester,
                        target: &Target {
                            namespace: String::new(),
                            pod: String::new(),
                            labels: Default::default(),
                            container: String::new(),
                        },
                        stages: &[],
                        approvals,
                        incident,
                    },
                )
                .is_ok()
    }

    /// Whether the approvals recorded on a request suffice under `rule` (or it auto-approves).
    fn approved_enough(&self, rule: &str, asked: &Approvals<'_>) -> Result<(), String> {
        if self
            .auto_approval(rule, &asked.requester.subject, asked.incident)
            .is_some()
        {
            return Ok(());
        }
        let (have, need) = self.approvals_counted(rule, asked.requester, asked.approvals);
        if have >= need {
            Ok(())
        } else {
            Err(format!(
                "this command needs approval (rule {rule}): {have} of {need} approvals"
            ))
        }
    }

    /// Decides a command that needs approval, given the request that asked for it: the permit
    /// is issued only to the requester, on the requested target, for exactly the requested argv,
    /// when enough distinct approvers (never the requester) approved it under the policy in
    /// force. A command that needs no approval is decided as usual.
    pub fn permit_approved_exec(
        &self,
        who: &Principal,
        target: &Target,
        line: &CommandLine,
        asked: &Approvals<'_>,
    ) -> Result<ExecPermit, Decision> {
        let d = self.decide(&Request {
            subject: &who.subject,
            target,
            mode: Mode::Exec,
            action: Action::Command(line),
        });
        if d.effect != Effect::NeedsApproval {
            return self.permit_exec(&who.subject, target, line);
        }
        let rule = d.rule.clone().unwrap_or_default();
        let refuse = |why: &str| {
            Err(Decision {
                reasons: vec![why.to_owned()],
                ..d.clone()
            })
        };
        if asked.requester.identity != who.identity
            || asked.requester.subject.user != who.subject.user
        {
            return refuse("the approval request is someone else's");
        }
        let t = asked.target;
        if (t.namespace.as_str(), t.pod.as_str(), t.container.as_str())
            != (
                target.namespace.as_str(),
                target.pod.as_str(),
                target.container.as_str(),
            )
        {
            return refuse("the approval is for another target");
        }
        if asked.stages != d.held_stages() {
            return refuse("the approval is for another command line");
        }
        if let Err(why) = self.approved_enough(&rule, asked) {
            return refuse(&why);
        }
        Ok(Permit::approved(
            who.subject.clone(),
            target.clone(),
            rule,
            *d.limits,
            Exec::approved(
                line.clone(),
                d.held_stages().to_vec(),
                d.paths.clone(),
                asked,
            ),
        ))
    }

    /// Whether an approved exec permit still stands under this policy: the command still needs
    /// (at most) approval under the same rule and argv, and its approvals still suffice.
    pub(super) fn approval_stands(
        &self,
        d: &Decision,
        stages: &[Vec<String>],
        asked: &Approvals<'_>,
    ) -> bool {
        match d.effect {
            Effect::Allow => true,
            Effect::NeedsApproval => {
                d.held_stages() == stages
                    && d.rule
                        .as_deref()
                        .is_some_and(|r| self.approved_enough(r, asked).is_ok())
            }
            Effect::Deny => false,
        }
    }
}
