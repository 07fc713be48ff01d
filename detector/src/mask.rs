//! Masking of subscriber numbers for logs, metrics and reports (`138****8000`).

use anning_rules::{AddrClass, Dim, Field, NumberPlan};

/// Masks a number: first three and last four digits kept for numbers of 8+ characters,
/// else only the first character.
pub fn mask_number(s: &str) -> String {
    let n = s.chars().count();
    if n >= 8 {
        let head: String = s.chars().take(3).collect();
        let tail: String = s.chars().skip(n - 4).collect();
        format!("{head}****{tail}")
    } else if n > 1 {
        let head: String = s.chars().take(1).collect();
        format!("{head}{}", "*".repeat(n - 1))
    } else {
        "*".into()
    }
}

/// Masks an address unless the number plan says it is a port or a call centre (which are
/// businesses, not persons).
pub fn mask_addr(s: &str, plan: &NumberPlan) -> String {
    match plan.classify(s) {
        AddrClass::Port | AddrClass::CallCentre => s.to_string(),
        _ => mask_number(s),
    }
}

/// Masks the addresses (`src`, `dst`) of a record given as a JSON object, in place.
pub fn mask_record_json(v: &mut serde_json::Value, plan: &NumberPlan) {
    if let Some(m) = v.as_object_mut() {
        for f in ["src", "dst"] {
            if let Some(serde_json::Value::String(a)) = m.get(f) {
                let masked = mask_addr(a, plan);
                m.insert(f.into(), masked.into());
            }
        }
    }
}

/// Masks the address parts of a (possibly compound) key of `dim`.
pub fn mask_key(dim: &Dim, key: &str, plan: &NumberPlan) -> String {
    if !dim.parts.iter().any(|f| f.is_address()) {
        return key.to_string();
    }
    if dim.parts.len() == 1 {
        return mask_addr(key, plan);
    }
    // Compound: values may themselves contain `+` only in non-address fields; split from
    // the known number of parts.
    let parts: Vec<&str> = key.splitn(dim.parts.len(), '+').collect();
    parts
        .iter()
        .zip(&dim.parts)
        .map(|(v, f)| {
            if matches!(f, Field::Src | Field::Dst) {
                mask_addr(v, plan)
            } else {
                v.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_subscribers_not_ports() {
        assert_eq!(mask_number("13800138000"), "138****8000");
        assert_eq!(mask_number("12345"), "1****");
        let plan = anning_rules::default_pack().number_plan;
        assert_eq!(mask_addr("10690001234", &plan), "10690001234");
        assert_eq!(mask_addr("13800138000", &plan), "138****8000");
        let dim = Dim::parse("sig+dst").unwrap();
        assert_eq!(mask_key(&dim, "京东+13800138000", &plan), "京东+138****8000");
    }
}
