//! The form (atom or binary) each node heard from names itself in, for
//! addressing direct broadcasts.

use super::frame::NameForm;

/// The most node names whose form a Phoenix transport remembers: see
/// [`PhoenixConfig::default_name_form`](super::PhoenixConfig::default_name_form).
pub const MAX_KNOWN_NODES: usize = 1024;

/// The longest node name learned, in characters: an Erlang atom's limit.
pub(super) const MAX_NODE_NAME: usize = 255;

/// Whether `node` has more characters than an atom may. The byte length
/// is only a fast path (a character is at most 4 bytes): the character
/// count decides.
fn too_long_for_an_atom(node: &str) -> bool {
    node.len() > 4 * MAX_NODE_NAME || node.chars().count() > MAX_NODE_NAME
}

/// The form each node heard from names itself in, shared by the receive
/// task (which learns) and the transport (which addresses direct
/// broadcasts).
///
/// Invariant: `order` holds each key of `forms` exactly once, oldest
/// first, and `forms.len() <= MAX_KNOWN_NODES`.
pub(super) struct NodeForms {
    default: NameForm,
    known: crate::loom::sync::Mutex<KnownNodes>,
}

#[derive(Default)]
struct KnownNodes {
    forms: std::collections::HashMap<Box<str>, NameForm>,
    order: std::collections::VecDeque<Box<str>>,
}

impl NodeForms {
    pub(super) fn new(default: NameForm) -> Self {
        Self {
            default,
            known: crate::loom::sync::Mutex::new(KnownNodes::default()),
        }
    }

    /// The form to name `node` in: the one it was last heard in, else the
    /// default.
    pub(super) fn of(&self, node: &str) -> NameForm {
        if too_long_for_an_atom(node) {
            // Only a binary can name it.
            return NameForm::Binary;
        }
        self.known
            .lock()
            .forms
            .get(node)
            .copied()
            .unwrap_or(self.default)
    }

    /// Records that `node` names itself in `form`. Allocates only for a
    /// name not known yet.
    pub(super) fn learn(&self, node: &str, form: NameForm) {
        // A name too long for an atom is a binary whatever was heard (see
        // `of`): not kept, so that the names kept cost at most
        // MAX_KNOWN_NODES times 1 KiB.
        if too_long_for_an_atom(node) {
            return;
        }
        let mut known = self.known.lock();
        if let Some(known_form) = known.forms.get_mut(node) {
            *known_form = form;
            return;
        }
        if known.forms.len() >= MAX_KNOWN_NODES {
            if let Some(oldest) = known.order.pop_front() {
                known.forms.remove(&oldest);
            }
        }
        let name: Box<str> = node.into();
        known.order.push_back(name.clone());
        known.forms.insert(name, form);
    }
}
