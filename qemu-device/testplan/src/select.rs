//! Which cases a run takes: `--filter GLOB` on case names (shell globs;
//! `[[]` matches a literal `[`), then `--shard I/N` (every Nth case from the
//! Ith, so shards stay balanced when files are sorted by length).

use crate::plan::Case;
use std::str::FromStr;

/// `--shard I/N`: this runner's part of the cases (1 <= I <= N).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 1-based index of this shard.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("bad shard '{s}': use I/N with 1 <= I <= N, e.g. 2/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// A name filter: a shell glob.
#[derive(Clone, Debug)]
pub struct Filter(glob::Pattern);

impl FromStr for Filter {
    type Err = String;

    fn from_str(s: &str) -> Result<Filter, String> {
        glob::Pattern::new(s).map(Filter).map_err(|e| {
            format!("bad filter '{s}': {e} (a shell glob; write [[] for a literal '[')")
        })
    }
}

impl Filter {
    /// Does the case's name match?
    pub fn matches(&self, name: &str) -> bool {
        self.0.matches(name)
    }
}

/// The cases this runner takes, in order.
pub fn select(cases: Vec<Case>, filter: Option<&Filter>, shard: Option<Shard>) -> Vec<Case> {
    cases
        .into_iter()
        .filter(|c| filter.is_none_or(|f| f.matches(&c.name)))
        .enumerate()
        .filter(|(i, _)| shard.is_none_or(|s| i % s.count == s.index - 1))
        .map(|(_, c)| c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Expect;

    fn named(names: &[&str]) -> Vec<Case> {
        names
            .iter()
            .map(|n| Case {
                name: n.to_string(),
                file: "f.toml".into(),
                command: "true".into(),
                expect: Expect::Pass,
                options: vec![],
            })
            .collect()
    }

    fn names(cases: &[Case]) -> Vec<&str> {
        cases.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn shards_split_the_filtered_cases_without_overlap() {
        let all = named(&["a", "b[x=1]", "b[x=2]", "c", "d"]);
        let f: Filter = "b*".parse().unwrap();
        assert_eq!(
            names(&select(all.clone(), Some(&f), None)),
            ["b[x=1]", "b[x=2]"]
        );
        let one = select(all.clone(), None, Some("1/2".parse().unwrap()));
        let two = select(all.clone(), None, Some("2/2".parse().unwrap()));
        assert_eq!(names(&one), ["a", "b[x=2]", "d"]);
        assert_eq!(names(&two), ["b[x=1]", "c"]);
        let lit: Filter = "b[[]x=2]".parse().unwrap();
        assert_eq!(names(&select(all, Some(&lit), None)), ["b[x=2]"]);
    }

    #[test]
    fn bad_shards_are_refused_with_the_form() {
        for s in ["0/2", "3/2", "1", "a/b", "1/0"] {
            assert_eq!(
                s.parse::<Shard>().unwrap_err(),
                format!("bad shard '{s}': use I/N with 1 <= I <= N, e.g. 2/4")
            );
        }
    }
}
