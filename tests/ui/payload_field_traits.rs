// A payload travels in messages: the macro derives `Clone`, `Debug`,
// `PartialEq`, `Serialize` and `Deserialize` for it, so every field type
// needs them too. A field type that lacks one is reported at the field.
use staff_pubsub::staff_events;

/// Has every trait a payload field needs but `PartialEq`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Blob(pub Vec<u8>);

/// Has none of the serde traits.
#[derive(Clone, Debug, PartialEq)]
pub struct Secret;

#[staff_events(scope = "shop")]
pub mod shop {
    use staff_pubsub::Uuid;

    #[entity(collection = "customers", events(customer_created))]
    pub struct Customer {
        pub uuid: Uuid,
        pub avatar: super::Blob,
        pub token: super::Secret,
    }
}

fn main() {}
