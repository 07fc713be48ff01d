//! What a rule's filter reads of a record, and whether the rule wants the record: the same
//! test for a record being routed and for one still being built (which needs its
//! fingerprint only if a rule that reads it wants the record).

use anning_rules::{AddrClass, DlrStatus, Filter, PortClass, RecordKind, Rule, RuleKind};

use crate::record::{Record, Slot};

/// Everything a filter reads of a record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Traits<'a> {
    pub kind: RecordKind,
    pub src_class: AddrClass,
    pub dst_class: AddrClass,
    pub port_class: PortClass,
    pub has_port: bool,
    pub status: Option<DlrStatus>,
    pub answered: Option<bool>,
    pub content: u8,
    pub licensed: Option<bool>,
    pub err: Option<&'a str>,
    pub dur: Option<f64>,
    pub unsubscribe: bool,
}

impl Record {
    pub(crate) fn traits(&self) -> Traits<'_> {
        Traits {
            kind: self.kind,
            src_class: self.src_class,
            dst_class: self.dst_class,
            port_class: self.port_class,
            has_port: self.get(Slot::Port).is_some(),
            status: self.status,
            answered: self.answered,
            content: self.content,
            licensed: self.licensed,
            err: self.get(Slot::Err),
            dur: self.dur,
            unsubscribe: self.unsubscribe,
        }
    }
}

pub(crate) fn matches(f: &Filter, r: &Traits<'_>) -> bool {
    f.kinds & r.kind.bit() != 0
        && f.src_class & r.src_class.bit() != 0
        && f.dst_class & r.dst_class.bit() != 0
        && (f.port_class == u8::MAX || (r.has_port && f.port_class & r.port_class.bit() != 0))
        && (f.status == u8::MAX || r.status.is_some_and(|s| f.status & s.bit() != 0))
        && f.answered.is_none_or(|a| r.answered == Some(a))
        && (f.content == u8::MAX || f.content & r.content != 0)
        && f.licensed.is_none_or(|l| r.licensed == Some(l))
        && f.err.as_ref().is_none_or(|errs| r.err.is_some_and(|e| errs.iter().any(|x| x == e)))
        && f.max_dur.is_none_or(|m| r.dur.is_some_and(|d| d < m))
}

/// Whether a rule looks at a record at all.
pub(crate) fn wants(rule: &Rule, r: &Traits<'_>) -> bool {
    match &rule.kind {
        RuleKind::Ratio { numerator, .. } => matches(&rule.filter, r) || matches(numerator, r),
        RuleKind::Unsubscribe { .. } => r.unsubscribe || matches(&rule.filter, r),
        _ => matches(&rule.filter, r),
    }
}
