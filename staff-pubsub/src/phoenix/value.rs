//! A message as a JSON value, with every struct field present: a field
//! its `Serialize` skips (an `Option` that is `None`, under
//! `skip_serializing_if`) is `null`, because Elixir payloads carry
//! `department_uuid: nil` rather than leave the key out.

use serde::ser::{self, Serialize, SerializeStruct};
use serde_json::{Map, Value};

type Json = serde_json::value::Serializer;
/// serde_json's value serializer, as a value.
const JSON: Json = serde_json::value::Serializer;

/// `value` as JSON, with skipped struct fields as `null`.
pub(crate) fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, serde_json::Error> {
    value.serialize(Fields)
}

/// serde_json's value serializer, but for structs.
struct Fields;

/// A struct's fields, skipped ones included.
pub(crate) struct Struct(Map<String, Value>);

impl SerializeStruct for Struct {
    type Ok = Value;
    type Error = serde_json::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.0.insert(key.to_owned(), value.serialize(Fields)?);
        Ok(())
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), Self::Error> {
        self.0.insert(key.to_owned(), Value::Null);
        Ok(())
    }

    fn end(self) -> Result<Value, Self::Error> {
        Ok(Value::Object(self.0))
    }
}

impl ser::Serializer for Fields {
    type Ok = Value;
    type Error = serde_json::Error;
    type SerializeSeq = <Json as ser::Serializer>::SerializeSeq;
    type SerializeTuple = <Json as ser::Serializer>::SerializeTuple;
    type SerializeTupleStruct = <Json as ser::Serializer>::SerializeTupleStruct;
    type SerializeTupleVariant = <Json as ser::Serializer>::SerializeTupleVariant;
    type SerializeMap = <Json as ser::Serializer>::SerializeMap;
    type SerializeStruct = Struct;
    type SerializeStructVariant = <Json as ser::Serializer>::SerializeStructVariant;

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Struct, Self::Error> {
        Ok(Struct(Map::with_capacity(len)))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Value, Self::Error> {
        value.serialize(self)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Self::Error> {
        value.serialize(self)
    }

    fn serialize_bool(self, v: bool) -> Result<Value, Self::Error> {
        JSON.serialize_bool(v)
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Self::Error> {
        JSON.serialize_i8(v)
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Self::Error> {
        JSON.serialize_i16(v)
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Self::Error> {
        JSON.serialize_i32(v)
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Self::Error> {
        JSON.serialize_i64(v)
    }
    fn serialize_i128(self, v: i128) -> Result<Value, Self::Error> {
        JSON.serialize_i128(v)
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Self::Error> {
        JSON.serialize_u8(v)
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Self::Error> {
        JSON.serialize_u16(v)
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Self::Error> {
        JSON.serialize_u32(v)
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Self::Error> {
        JSON.serialize_u64(v)
    }
    fn serialize_u128(self, v: u128) -> Result<Value, Self::Error> {
        JSON.serialize_u128(v)
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Self::Error> {
        JSON.serialize_f32(v)
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Self::Error> {
        JSON.serialize_f64(v)
    }
    fn serialize_char(self, v: char) -> Result<Value, Self::Error> {
        JSON.serialize_char(v)
    }
    fn serialize_str(self, v: &str) -> Result<Value, Self::Error> {
        JSON.serialize_str(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Self::Error> {
        JSON.serialize_bytes(v)
    }
    fn serialize_none(self) -> Result<Value, Self::Error> {
        JSON.serialize_none()
    }
    fn serialize_unit(self) -> Result<Value, Self::Error> {
        JSON.serialize_unit()
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<Value, Self::Error> {
        JSON.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<Value, Self::Error> {
        JSON.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Self::Error> {
        JSON.serialize_newtype_variant(name, index, variant, value)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        JSON.serialize_seq(len)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Self::Error> {
        JSON.serialize_tuple(len)
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Self::Error> {
        JSON.serialize_tuple_struct(name, len)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        JSON.serialize_tuple_variant(name, index, variant, len)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        JSON.serialize_map(len)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        JSON.serialize_struct_variant(name, index, variant, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Payload {
        uuid: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    }

    #[test]
    fn skipped_fields_are_null() {
        let value = to_value(&Payload {
            uuid: 1,
            name: None,
        })
        .unwrap();
        assert_eq!(value, serde_json::json!({"uuid": 1, "name": null}));
        assert_eq!(
            serde_json::to_value(Payload {
                uuid: 1,
                name: None
            })
            .unwrap(),
            serde_json::json!({"uuid": 1})
        );
    }
}
