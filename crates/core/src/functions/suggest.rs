//! Close names for "not found" messages: the same name in another case,
//! then names containing it or contained in it, then names within a small
//! edit distance (Levenshtein, by `strsim`).

/// Up to `n` of `names` close to `query`, best first.
pub(super) fn rank(query: &str, names: &[String], n: usize) -> Vec<String> {
    let q = query.to_lowercase();
    let q_len = q.chars().count();
    if q_len == 0 || n == 0 {
        return Vec::new();
    }
    let max_distance = ((q_len + 1) / 3).max(1);
    let mut ranked: Vec<(u8, usize, &String)> = names
        .iter()
        .filter_map(|name| {
            let lower = name.to_lowercase();
            let distance = strsim::levenshtein(&q, &lower);
            let rank = if lower == q {
                0
            } else if q_len.min(lower.chars().count()) >= 2
                && (lower.contains(&q) || q.contains(&lower))
            {
                1
            } else if distance <= max_distance {
                2
            } else {
                return None;
            };
            Some((rank, distance, name))
        })
        .collect();
    ranked.sort();
    ranked
        .into_iter()
        .take(n)
        .map(|(_, _, name)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn ranks_case_then_containment_then_distance() {
        let all = names(&["volume_by_exchange", "Volume", "volmue", "daily_pnl"]);
        assert_eq!(
            rank("volume", &all, 3),
            ["Volume", "volume_by_exchange", "volmue"]
        );
        assert_eq!(rank("daly_pnl", &all, 3), ["daily_pnl"]);
        assert!(rank("", &all, 3).is_empty());
        assert!(rank("volume", &all, 0).is_empty());
    }

    #[test]
    fn distances_count_characters_not_bytes() {
        // One edit: é -> e (two bytes against one).
        assert_eq!(rank("émoji", &names(&["emoji"]), 1), ["emoji"]);
        assert_eq!(strsim::levenshtein("kitten", "sitting"), 3);
    }
}
