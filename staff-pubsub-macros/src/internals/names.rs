//! Case conversions between Rust and Elixir spellings, near-miss hints, and
//! the words of a spec that become parts of generated names, topic strings
//! and docs.

/// `TeamMembership` -> `team_membership`.
pub(crate) fn snake_case(camel: &str) -> String {
    let mut snake = String::with_capacity(camel.len() + 4);
    for (i, ch) in camel.char_indices() {
        if ch.is_uppercase() {
            if i > 0 {
                snake.push('_');
            }
            snake.extend(ch.to_lowercase());
        } else {
            snake.push(ch);
        }
    }
    snake
}

/// `person_employment_changed` -> `PersonEmploymentChanged`.
pub(crate) fn upper_camel_case(snake: &str) -> String {
    snake
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect()
}

/// The variant of an event: the atom without the entity's own prefix, in
/// UpperCamelCase (`team_created` of `team` -> `Created`;
/// `team_person_added` of `team_membership` -> `TeamPersonAdded`). When the
/// stripped name is no identifier (`account_2fa_enabled` -> `2faEnabled`,
/// `account_self` -> `Self`), the whole atom is used.
pub(crate) fn variant_name(entity: &str, event: &str) -> String {
    let stripped = event
        .strip_prefix(entity)
        .and_then(|rest| rest.strip_prefix('_'))
        .filter(|rest| !rest.is_empty())
        .map(upper_camel_case);
    match stripped {
        Some(variant) if is_ident(&variant) => variant,
        _ => upper_camel_case(event),
    }
}

/// Whether `name` can be written as a Rust identifier (not a keyword).
pub(crate) fn is_ident(name: &str) -> bool {
    syn::parse_str::<syn::Ident>(name).is_ok()
}

/// `staff:teams`, `staff:team`: a topic string, or the name of a keyed topic.
pub(crate) fn topic_string(scope: &str, word: &str) -> String {
    format!("{scope}:{word}")
}

/// `team_membership` -> `team membership`, for docs.
pub(crate) fn display_name(name: &str) -> String {
    name.replace('_', " ")
}

/// Whether `name` is a lower-case snake_case identifier part: `[a-z][a-z0-9_]*`.
pub(crate) fn is_lower_snake(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.ends_with('_')
        && !name.contains("__")
}

/// Levenshtein distance, for "did you mean" hints. Inputs are short.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(distance, c)| *distance > 0 && *distance <= 2.max(c.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_case() {
        assert_eq!(snake_case("TeamMembership"), "team_membership");
        assert_eq!(snake_case("Person"), "person");
        assert_eq!(
            upper_camel_case("person_employment_changed"),
            "PersonEmploymentChanged"
        );
        assert_eq!(upper_camel_case("created"), "Created");
    }

    #[test]
    fn checks_snake_case() {
        assert!(is_lower_snake("team_membership"));
        for bad in [
            "", "Team", "team:s", "team s", "_team", "team_", "te__am", "1team",
        ] {
            assert!(!is_lower_snake(bad), "{bad:?}");
        }
    }

    #[test]
    fn suggests_near_misses_only() {
        assert_eq!(
            did_you_mean("entiy", &["entity", "relation"]),
            Some("entity")
        );
        assert_eq!(
            did_you_mean("colection", &["name", "collection", "events"]),
            Some("collection")
        );
        assert_eq!(
            did_you_mean("derive", &["entity", "relation", "route", "endpoint"]),
            None
        );
    }
}
