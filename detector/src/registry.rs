//! The port registry of `contract/actions.md`: one row per bulk port with its service
//! provider, class and licensed signatures.

use hashbrown::HashMap;

use anning_rules::PortClass;

/// One registered port.
#[derive(Debug, Clone, PartialEq)]
pub struct PortEntry {
    pub sp: String,
    pub class: PortClass,
    /// Signatures the port is licensed to use; empty = not recorded.
    pub signatures: Vec<String>,
}

/// Ports by number. Ports missing from it have class `unknown`.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Looked up for every record from a port: hashbrown's hasher (foldhash), not std's
    /// SipHash.
    ports: HashMap<String, PortEntry>,
}

/// A registry row that could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RegistryError {
    pub line: usize,
    pub message: String,
}

impl Registry {
    pub fn get(&self, port: &str) -> Option<&PortEntry> {
        self.ports.get(port)
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Parses the registry CSV (header `port,sp,class,signatures`, columns in any order).
    /// Returns every bad line at once.
    pub fn parse(text: &str) -> Result<Registry, Vec<RegistryError>> {
        let mut errors = Vec::new();
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Ok(Registry::default());
        };
        let cols: Vec<&str> = header.trim_start_matches('\u{feff}').split(',').map(str::trim).collect();
        let find = |name: &str| cols.iter().position(|c| *c == name);
        let (Some(ip), isp, Some(ic), isig) = (find("port"), find("sp"), find("class"), find("signatures")) else {
            return Err(vec![RegistryError {
                line: 1,
                message: format!("header must name `port`, `sp`, `class`, `signatures`; found `{header}`"),
            }]);
        };
        let mut ports = HashMap::new();
        for (i, line) in lines {
            let lineno = i + 1;
            let cells: Vec<&str> = line.split(',').map(|c| c.trim().trim_matches('"')).collect();
            if cells.len() != cols.len() {
                errors.push(RegistryError {
                    line: lineno,
                    message: format!("expected {} columns, found {}", cols.len(), cells.len()),
                });
                continue;
            }
            let port = cells[ip];
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(RegistryError {
                    line: lineno,
                    message: format!("`port` = \"{port}\" is not a digit string"),
                });
                continue;
            }
            let class = match PortClass::from_name(cells[ic]) {
                Some(PortClass::Unknown) | None => {
                    errors.push(RegistryError {
                        line: lineno,
                        message: format!("`class` = \"{}\" is not one of otp, notify, marketing", cells[ic]),
                    });
                    continue;
                }
                Some(c) => c,
            };
            let signatures = isig
                .map(|j| {
                    cells[j]
                        .split('|')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let sp = isp.map(|j| cells[j].to_string()).unwrap_or_default();
            if ports.insert(port.to_string(), PortEntry { sp, class, signatures }).is_some() {
                errors.push(RegistryError {
                    line: lineno,
                    message: format!("port {port} is listed twice"),
                });
            }
        }
        if errors.is_empty() { Ok(Registry { ports }) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_contract_example() {
        let r = Registry::parse("port,sp,class,signatures\n10690001234,901234,marketing,京东|京东金融\n1065800001,900001,otp,\n10655000,900002,notify,工商银行\n").unwrap();
        assert_eq!(r.len(), 3);
        let e = r.get("10690001234").unwrap();
        assert_eq!(e.class, PortClass::Marketing);
        assert_eq!(e.signatures, vec!["京东", "京东金融"]);
        assert!(r.get("1065800001").unwrap().signatures.is_empty());
    }

    #[test]
    fn reports_every_bad_line() {
        let errs = Registry::parse("port,sp,class,signatures\nabc,1,otp,\n1069,1,spam,\n1069,1,otp\n").unwrap_err();
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            lines,
            vec![
                "line 2: `port` = \"abc\" is not a digit string",
                "line 3: `class` = \"spam\" is not one of otp, notify, marketing",
                "line 4: expected 4 columns, found 3",
            ]
        );
    }
}
