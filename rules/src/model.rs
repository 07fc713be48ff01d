//! The validated, compiled form of a rule pack: what the engine runs.
//!
//! Nothing here can be built from unvalidated input except through [`crate::compile`].

use std::fmt;

use regex::Regex;

/// A record field that can key state, alone or inside a compound dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// The bulk port involved: `src` when it is a port, else `dst` when it is a port.
    Port,
    /// The signature: `sig`, else the `【…】` at the start or end of `text`.
    Sig,
    Src,
    Dst,
    /// Service provider: the record's `sp`, else the registry's `sp` for its port.
    Sp,
    Cell,
    Imei,
    Gw,
    Tpl,
}

impl Field {
    pub const ALL: [Field; 9] = [
        Field::Port,
        Field::Sig,
        Field::Src,
        Field::Dst,
        Field::Sp,
        Field::Cell,
        Field::Imei,
        Field::Gw,
        Field::Tpl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Port => "port",
            Field::Sig => "sig",
            Field::Src => "src",
            Field::Dst => "dst",
            Field::Sp => "sp",
            Field::Cell => "cell",
            Field::Imei => "imei",
            Field::Gw => "gw",
            Field::Tpl => "tpl",
        }
    }

    pub fn from_name(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Whether values of this field are subscriber numbers or may be (personal data).
    pub fn is_address(self) -> bool {
        matches!(self, Field::Src | Field::Dst)
    }
}

/// A dimension: the kind of target state is kept for. One field or a compound (`sig+dst`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dim {
    /// The fields whose values, joined by `+`, form the key. Never empty, no repeats.
    pub parts: Vec<Field>,
}

impl Dim {
    pub fn name(&self) -> String {
        self.parts.iter().map(|f| f.name()).collect::<Vec<_>>().join("+")
    }

    pub fn parse(s: &str) -> Result<Dim, String> {
        let mut parts = Vec::new();
        for p in s.split('+') {
            let f = Field::from_name(p.trim()).ok_or_else(|| {
                format!(
                    "unknown dimension `{p}` in `{s}`; known: {}",
                    Field::ALL.map(|f| f.name()).join(", ")
                )
            })?;
            if parts.contains(&f) {
                return Err(format!("dimension `{s}` names `{p}` twice"));
            }
            parts.push(f);
        }
        Ok(Dim { parts })
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Declares a small closed vocabulary with names and a bit per value (for filter masks).
macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            pub fn name(self) -> &'static str {
                match self { $($name::$var => $text),+ }
            }

            pub fn from_name(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$var),)+ _ => None }
            }

            /// This value's bit in a filter mask.
            pub fn bit(self) -> u8 {
                1 << (self as u8)
            }

            pub fn names() -> String {
                Self::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

vocabulary!(
    /// The record kinds of the record contract.
    RecordKind { Sms = "sms", Dlr = "dlr", Call = "call", Complaint = "complaint" }
);
vocabulary!(
    /// Address classes assigned by the pack's number plan.
    AddrClass { Subscriber = "subscriber", Port = "port", CallCentre = "call_centre", Other = "other" }
);
vocabulary!(
    /// Port classes from the port registry; `unknown` for ports not in it.
    PortClass { Otp = "otp", Notify = "notify", Marketing = "marketing", Unknown = "unknown" }
);
vocabulary!(
    /// Delivery-report outcomes.
    DlrStatus { Delivered = "delivered", Undeliverable = "undeliverable", Rejected = "rejected", Expired = "expired" }
);
vocabulary!(
    /// What an action asks enforcement points to do.
    ActionKind { Alert = "alert", Throttle = "throttle", Suspend = "suspend", Release = "release" }
);

/// Which records a rule counts. Each mask has one bit per allowed value; `u8::MAX` = any.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub kinds: u8,
    pub src_class: u8,
    pub dst_class: u8,
    /// Registry class of the record's port; records without a port never match a
    /// restricted mask.
    pub port_class: u8,
    /// Delivery-report status; records other than `dlr` never match a restricted mask.
    pub status: u8,
    /// Calls only: answered or not; `None` = either.
    pub answered: Option<bool>,
}

impl Filter {
    pub const ANY: Filter = Filter {
        kinds: u8::MAX,
        src_class: u8::MAX,
        dst_class: u8::MAX,
        port_class: u8::MAX,
        status: u8::MAX,
        answered: None,
    };
}

/// One rung of an escalation ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `alert`, `throttle` or `suspend` (never `release`).
    pub action: ActionKind,
    /// Messages (or calls) per second allowed; `Some` exactly for `throttle`.
    pub rate: Option<f64>,
    /// How long the action holds before it lapses, in ms (> 0).
    pub for_ms: i64,
}

impl Step {
    /// Orders steps by how hard they bite: suspend > throttle (lower rate is stronger) > alert.
    pub fn strength(&self) -> (u8, f64) {
        match self.action {
            ActionKind::Alert => (1, 0.0),
            ActionKind::Throttle => (2, -self.rate.unwrap_or(0.0)),
            ActionKind::Suspend => (3, 0.0),
            ActionKind::Release => (0, 0.0),
        }
    }
}

/// What a rule measures and when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Count (or distinct count of `distinct`) over the sliding window ≥ `threshold`.
    Rate { threshold: u64, distinct: Option<Field> },
    /// Window counts in `[lo, limit)` in at least `k` of the last `n` back-to-back windows,
    /// evaluated at every slide step (so any phase of the hour is covered).
    NearLimit { limit: u64, lo: u64, band: f64, k: u32, n: u32 },
}

impl RuleKind {
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::Rate { .. } => "rate",
            RuleKind::NearLimit { .. } => "near_limit",
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique within the pack; appears in every action the rule causes.
    pub id: String,
    pub description: String,
    /// Index into [`Pack::dims`] of the dimension this rule keys state by.
    pub dim: usize,
    pub filter: Filter,
    /// Window length in ms; a whole multiple of `slide_ms`.
    pub window_ms: i64,
    /// Resolution (bin width and evaluation step) in ms, > 0.
    pub slide_ms: i64,
    pub kind: RuleKind,
    /// Escalation ladder: index = target's offence level − 1; past the end the last step
    /// repeats with its duration multiplied by the pack's escalation factor.
    pub ladder: Vec<Step>,
}

impl Rule {
    /// Bins in one window.
    pub fn bins(&self) -> usize {
        (self.window_ms / self.slide_ms) as usize
    }
}

/// The number plan: which address class a digit string belongs to.
#[derive(Debug, Clone)]
pub struct NumberPlan {
    /// Patterns per class, tried in the order subscriber, port, call_centre; first match wins.
    pub classes: Vec<(AddrClass, Vec<Regex>)>,
}

impl NumberPlan {
    pub fn classify(&self, addr: &str) -> AddrClass {
        for (class, pats) in &self.classes {
            if pats.iter().any(|p| p.is_match(addr)) {
                return *class;
            }
        }
        AddrClass::Other
    }
}

/// How late records (event time below the watermark) are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatePolicy {
    /// Not applied to windows; counted and written to the rejects output with reason `late`.
    DeadLetter,
    /// Applied as if they arrived at the watermark (their time is clamped up to it), counted.
    Admit,
}

/// fail2ban-style escalation parameters shared by every target.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// Each `decay_ms` of good behaviour after an action lapses lowers the level by one.
    pub decay_ms: i64,
    /// Past the end of a ladder, each further level multiplies the last step's duration.
    pub factor: f64,
    /// Upper bound on any action's duration, in ms.
    pub max_ms: i64,
}

/// A compiled rule pack.
#[derive(Debug, Clone)]
pub struct Pack {
    pub name: String,
    /// xxh3 of the pack's source text: versions every action it causes.
    pub hash: u64,
    /// Watermark = max event time seen − `lateness_ms`.
    pub lateness_ms: i64,
    pub late_policy: LatePolicy,
    pub escalation: Escalation,
    pub number_plan: NumberPlan,
    /// The distinct dimensions the rules key by; rules refer to them by index.
    pub dims: Vec<Dim>,
    pub rules: Vec<Rule>,
}

impl Pack {
    /// The pack hash as 16 hex digits.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash)
    }
}
