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
    /// Content fingerprint of `text` ([`crate::text::fingerprint`]), else the record's `tpl`.
    Fp,
}

impl Field {
    pub const ALL: [Field; 10] = [
        Field::Port,
        Field::Sig,
        Field::Src,
        Field::Dst,
        Field::Sp,
        Field::Cell,
        Field::Imei,
        Field::Gw,
        Field::Tpl,
        Field::Fp,
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
            Field::Fp => "fp",
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
    /// Content classes (bits of [`Pack::lexicon`]): the text must be in at least one.
    pub content: u8,
    /// `sms` only: whether the signature is licensed on the port (registry); `None` = either.
    /// A port message is unlicensed when its port is not in the registry or its signature is
    /// not among the port's.
    pub licensed: Option<bool>,
    /// Delivery-report `err` values; `None` = any (records without `err` never match a list).
    pub err: Option<Vec<String>>,
    /// Calls only: conversation shorter than this many seconds.
    pub max_dur: Option<f64>,
}

impl Filter {
    pub const ANY: Filter = Filter {
        kinds: u8::MAX,
        src_class: u8::MAX,
        dst_class: u8::MAX,
        port_class: u8::MAX,
        status: u8::MAX,
        answered: None,
        content: u8::MAX,
        licensed: None,
        err: None,
        max_dur: None,
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
    /// Count (or distinct count of `distinct`) over the sliding window ≥ `threshold`. With
    /// `sequential = Some(d)` only records whose `dst` is within `d` of the key's previous
    /// `dst` count (a sweep through consecutive numbers).
    Rate {
        threshold: u64,
        distinct: Option<Field>,
        sequential: Option<u64>,
    },
    /// Over the sliding window, records matching `numerator` ÷ records matching the rule's
    /// `when` (at least `min` of them) ≥ `ratio` (≤ when `below`).
    Ratio {
        numerator: Filter,
        ratio: f64,
        min: u64,
        below: bool,
    },
    /// Messages of a signature (the dim) to subscribers who replied an unsubscribe word to
    /// one of its ports more than `grace_ms` earlier; unsubscribes are remembered for
    /// `remember_ms`. Fires when violations in the window reach `threshold`.
    Unsubscribe { grace_ms: i64, remember_ms: i64, threshold: u64 },
    /// Window counts in `[lo, limit)` in at least `k` of the last `n` back-to-back windows,
    /// evaluated at every slide step (so any phase of the hour is covered).
    NearLimit { limit: u64, lo: u64, band: f64, k: u32, n: u32 },
}

impl RuleKind {
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::Rate { .. } => "rate",
            RuleKind::NearLimit { .. } => "near_limit",
            RuleKind::Ratio { .. } => "ratio",
            RuleKind::Unsubscribe { .. } => "unsubscribe",
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
    /// Indices into [`Pack::dims`] of the targets acted on, taken from the record that tips
    /// the rule (and from each later matching record while the condition holds); empty =
    /// the rule's own key.
    pub targets: Vec<usize>,
    /// A misuse rule may throttle or suspend ports of the pack's protected classes; any
    /// other rule only alerts on them.
    pub misuse: bool,
    /// Suspicion from another rule of the same dimension (complaints, typically).
    pub suspect: Option<Suspect>,
    /// Shadow mode: evaluated and reported as would-be actions (marked `shadow`), never
    /// enforced — they do not count as the target's action in force, and the replay and
    /// the daemon write them apart from the actions enforcement points read.
    pub shadow: bool,
}

/// While rule `rule` (a `ratio` rule of the same dimension) holds for a key, this rule's
/// `threshold` is multiplied by `factor` (rounded up, at least 1) and its actions start
/// `levels` rungs higher on the ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspect {
    /// Index into [`Pack::rules`].
    pub rule: usize,
    pub factor: f64,
    pub levels: u32,
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
    /// Every pattern in one DFA, in that order; `None` when the patterns do not make one
    /// (too large, or a Unicode word boundary), and the regexes are run one by one.
    dfa: Option<PlanDfa>,
}

/// The plan's patterns as one dense DFA that needs no cache: two lookups per record, where
/// the regexes took a cache from a pool shared by the decoding threads per pattern tried.
#[derive(Debug, Clone)]
struct PlanDfa {
    dfa: regex_automata::dfa::dense::DFA<Vec<u32>>,
    /// Per pattern: its class.
    class_of: Vec<AddrClass>,
}

impl PlanDfa {
    /// Largest DFA built for a plan; a bigger one is left to the regexes.
    const SIZE_LIMIT: usize = 4 << 20;

    fn new(classes: &[(AddrClass, Vec<Regex>)]) -> Option<PlanDfa> {
        use regex_automata::MatchKind;
        use regex_automata::dfa::dense;
        let (class_of, patterns): (Vec<AddrClass>, Vec<&str>) = classes
            .iter()
            .flat_map(|(c, pats)| pats.iter().map(move |p| (*c, p.as_str())))
            .unzip();
        let dfa = dense::Builder::new()
            .configure(
                dense::DFA::config()
                    .match_kind(MatchKind::All)
                    .dfa_size_limit(Some(Self::SIZE_LIMIT))
                    .determinize_size_limit(Some(Self::SIZE_LIMIT)),
            )
            .build_many(&patterns)
            .ok()?;
        Some(PlanDfa { dfa, class_of })
    }

    /// The class of the first pattern (in plan order) matching anywhere in `addr`: the DFA
    /// walked byte by byte (its match states, one byte late, name every pattern matching up
    /// to there), stopping at a dead state or once the first pattern has matched.
    fn classify(&self, addr: &str) -> AddrClass {
        use regex_automata::Input;
        use regex_automata::dfa::Automaton;
        let Ok(mut s) = self.dfa.start_state_forward(&Input::new(addr)) else {
            return AddrClass::Other;
        };
        let mut first = usize::MAX;
        let seen = |s, first: &mut usize| {
            for i in 0..self.dfa.match_len(s) {
                *first = (*first).min(self.dfa.match_pattern(s, i).as_usize());
            }
        };
        for &b in addr.as_bytes() {
            s = self.dfa.next_state(s, b);
            // One comparison for the usual state; the kind of a special one after it.
            if !self.dfa.is_special_state(s) {
                continue;
            }
            if self.dfa.is_match_state(s) {
                seen(s, &mut first);
                if first == 0 {
                    break;
                }
            } else if self.dfa.is_dead_state(s) {
                break;
            } else if self.dfa.is_quit_state(s) {
                // No quit bytes are configured, so this is never reached; a search that
                // could not finish gave `Other` before, and does here.
                return AddrClass::Other;
            }
        }
        // A match of the whole address shows one step past its end; a dead state stays dead.
        s = self.dfa.next_eoi_state(s);
        if self.dfa.is_match_state(s) {
            seen(s, &mut first);
        }
        self.class_of.get(first).copied().unwrap_or(AddrClass::Other)
    }
}

impl NumberPlan {
    /// The plan from patterns per class, in the order they are tried.
    pub fn new(classes: Vec<(AddrClass, Vec<Regex>)>) -> NumberPlan {
        let dfa = PlanDfa::new(&classes);
        NumberPlan { classes, dfa }
    }

    pub fn classify(&self, addr: &str) -> AddrClass {
        match &self.dfa {
            Some(d) => d.classify(addr),
            None => self.classify_by_regexes(addr),
        }
    }

    /// [`classify`](Self::classify) by running each class's regexes in turn.
    pub fn classify_by_regexes(&self, addr: &str) -> AddrClass {
        for (class, pats) in &self.classes {
            if pats.iter().any(|p| p.is_match(addr)) {
                return *class;
            }
        }
        AddrClass::Other
    }

    /// Whether the patterns run as one DFA.
    pub fn is_one_dfa(&self) -> bool {
        self.dfa.is_some()
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

/// An allowlist entry: no throttle or suspension of `key` of `dim` before `until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Allow {
    /// Index into [`Pack::dims`].
    pub dim: usize,
    pub key: String,
    /// Event time (ms) the entry expires.
    pub until: i64,
    pub reason: String,
    pub author: String,
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
    /// Content classes for `when.content`.
    pub lexicon: crate::text::Lexicon,
    /// Unsubscribe words, as [`crate::text::bare`] gives them.
    pub unsubscribe_words: Vec<String>,
    /// Port classes (mask) that only misuse rules may throttle or suspend.
    pub protect: u8,
    pub allow: Vec<Allow>,
    /// How long a port message is remembered so a delivery report without `src` can be
    /// joined to it by `ref`.
    pub dlr_join_ms: i64,
    /// (line, column) of each rule's table in the source, for warnings.
    pub rule_pos: Vec<(usize, usize)>,
    /// The source text the hash covers (the pack, then each merged allowlist file): what the
    /// audit log archives so an action's rule can be shown as it was.
    pub source: std::sync::Arc<str>,
    /// [`Pack::reading_fingerprint`] of this pack's dims and rules.
    pub fingerprint_rules: Vec<usize>,
}

impl Pack {
    /// Whether any rule keys state by, counts or targets the content fingerprint.
    pub fn uses_fingerprint(&self) -> bool {
        !self.fingerprint_rules.is_empty()
    }

    /// The rules that read a record's fingerprint (indices into `rules`): keyed by a dim with
    /// `fp` in it, counting distinct `fp` values, or acting on a target keyed by it. Only
    /// records some of them want need one.
    pub fn reading_fingerprint(dims: &[Dim], rules: &[Rule]) -> Vec<usize> {
        let has_fp = |d: usize| dims[d].parts.contains(&Field::Fp);
        (0..rules.len())
            .filter(|&r| {
                let rule = &rules[r];
                has_fp(rule.dim)
                    || matches!(
                        rule.kind,
                        RuleKind::Rate {
                            distinct: Some(Field::Fp),
                            ..
                        }
                    )
                    || rule.targets.iter().any(|&t| has_fp(t))
            })
            .collect()
    }
}

impl Pack {
    /// The pack hash as 16 hex digits.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn plan(classes: &[(AddrClass, &[&str])]) -> NumberPlan {
        NumberPlan::new(
            classes
                .iter()
                .map(|(c, pats)| (*c, pats.iter().map(|p| Regex::new(p).expect("valid pattern")).collect()))
                .collect(),
        )
    }

    /// The default plan, several patterns to a class, classes that overlap (the first wins),
    /// unanchored and Unicode patterns, an empty class.
    fn plans() -> Vec<NumberPlan> {
        use AddrClass::*;
        vec![
            plan(&[
                (Subscriber, &["^1[3-9][0-9]{9}$"]),
                (Port, &["^106[0-9]*$"]),
                (CallCentre, &["^9[56][0-9]*$"]),
            ]),
            plan(&[
                (Subscriber, &["^(\\+?86)?1[3-9]\\d{9}$", "^0[1-9]\\d{9,10}$"]),
                (Port, &["^10(65|69)", "^1[3-9]"]),
                (CallCentre, &["95", "^4008\\d+$"]),
            ]),
            plan(&[(Subscriber, &[]), (Port, &["\\d{5,}", "^$"]), (CallCentre, &["号|號", "(?i)TD"])]),
        ]
    }

    /// Built once: a DFA takes a while to build in a debug build.
    static PLANS: std::sync::LazyLock<Vec<NumberPlan>> = std::sync::LazyLock::new(plans);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// The one DFA gives the class the regexes give, tried in turn.
        #[test]
        fn the_plans_dfa_classifies_as_its_regexes(addr in "(\\+86|0|1|10|106|1065|95|96|4008)?[0-9]{0,12}(号|td|TD|x|é)?") {
            for p in PLANS.iter() {
                prop_assert!(p.is_one_dfa());
                prop_assert_eq!(p.classify(&addr), p.classify_by_regexes(&addr), "{}", addr);
            }
        }
    }

    #[test]
    fn a_plan_the_dfa_cannot_hold_runs_its_regexes() {
        // A Unicode word boundary: the regexes handle it, a dense DFA does not.
        let p = plan(&[(AddrClass::Subscriber, &["\\b1\\d+\\b"]), (AddrClass::Port, &["^106"])]);
        assert!(!p.is_one_dfa());
        assert_eq!(p.classify("13800000000"), AddrClass::Subscriber);
        assert_eq!(p.classify("1065"), AddrClass::Subscriber);
        assert_eq!(p.classify("x"), AddrClass::Other);
        let d = &plans()[0];
        assert_eq!(d.classify("13800000000"), AddrClass::Subscriber);
        assert_eq!(d.classify("10690001"), AddrClass::Port);
        assert_eq!(d.classify("95588"), AddrClass::CallCentre);
        assert_eq!(d.classify("12345"), AddrClass::Other);
    }
}
