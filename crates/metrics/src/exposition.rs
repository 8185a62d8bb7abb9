//! Reading samples back out of the text exposition: for tests, scripts and
//! `rbk` commands that check a node's metrics over HTTP.

/// One sample line: `name{k="v",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample in a Prometheus or OpenMetrics text body; comment lines and
/// lines that do not parse are skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

/// The value of the sample named `name` whose labels include all of
/// `labels` (other labels are ignored); `None` if there is none.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text).into_iter().find_map(|s| {
        let matches = s.name == name && labels.iter().all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v));
        matches.then_some(s.value)
    })
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut end = None;
        loop {
            // key
            let key_start = chars.clone().next()?.0;
            let mut key_end = key_start;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    key_end = i;
                    break;
                }
                if c == '}' {
                    end = Some(i);
                    break;
                }
            }
            if end.is_some() {
                break;
            }
            let key = body[key_start..key_end].trim_start_matches(',').trim().to_owned();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.push((key, value));
            match chars.clone().next()? {
                (i, '}') => {
                    end = Some(i);
                    break;
                }
                (_, ',') => {
                    chars.next();
                }
                _ => return None,
            }
        }
        &body[end? + 1..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labelled_and_plain_samples() {
        let text = "# HELP x_total x\n# TYPE x_total counter\nx_total{result=\"done\",op=\"a,b}\"} 3\nplain 7\nh_bucket{le=\"+Inf\"} 2\n";
        assert_eq!(sample(text, "x_total", &[("result", "done")]), Some(3.0));
        assert_eq!(sample(text, "x_total", &[("op", "a,b}")]), Some(3.0));
        assert_eq!(sample(text, "plain", &[]), Some(7.0));
        assert_eq!(sample(text, "h_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(sample(text, "x_total", &[("result", "failed")]), None);
    }
}
