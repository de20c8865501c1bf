//! The shape of the generated schema (`schema.rs`): messages, their fields by tag, and the
//! kinds that map an envelope's apiVersion/kind to a root message.

/// One protobuf message of the Kubernetes API.
#[derive(Debug)]
pub(crate) struct Message {
    /// The proto full name, for error messages (`k8s.io.api.core.v1.PodSpec`).
    pub name: &'static str,
    /// How the message maps to JSON when it is not a plain object.
    pub special: Special,
    /// The fields, sorted by tag.
    pub fields: &'static [Field],
}

impl Message {
    /// The field with this tag, if the schema knows it.
    pub fn field(&self, tag: u32) -> Option<&'static Field> {
        let fields: &'static [Field] = self.fields;
        fields
            .binary_search_by_key(&tag, |f| f.tag)
            .ok()
            .map(|i| &fields[i])
    }
}

/// One field of a message.
#[derive(Debug)]
pub(crate) struct Field {
    pub tag: u32,
    /// The JSON name; for [`Shape::Inline`] the Go field name (its fields are flattened).
    pub json: &'static str,
    pub shape: Shape,
    /// The element type (for maps: the value type; keys are strings).
    pub ty: Ty,
}

/// Cardinality of a field and how it lands in the JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A single value; an empty string is left out (Go's `omitempty`).
    One,
    /// A single value that keeps an empty string (a Go `*string` where `""` means something).
    Keep,
    /// A list.
    Rep,
    /// A `map<string, ty>` (repeated key/value entries).
    Map,
    /// An embedded Go struct (`json:",inline"`): its fields go into the parent object.
    Inline,
}

/// A field's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    F64,
    /// A message: an index into `MESSAGES`.
    Msg(u16),
}

/// Messages whose JSON form is not an object of their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    None,
    /// `resource.Quantity`: `string` (1) → JSON string.
    Quantity,
    /// `meta/v1.Time`: seconds (1) → RFC 3339 in whole seconds; empty → null.
    Time,
    /// `meta/v1.MicroTime`: seconds (1), nanos (2) → RFC 3339 with microseconds.
    MicroTime,
    /// `meta/v1.Duration`: nanoseconds (1) → Go duration string. (No kind in the table uses
    /// it today; the generator emits it if one does.)
    #[allow(dead_code)]
    Duration,
    /// `intstr.IntOrString`: type (1), intVal (2), strVal (3) → number or string.
    IntOrString,
    /// Raw JSON bytes (1) → the JSON value (`FieldsV1`, apiextensions `JSON`).
    RawJson,
    /// `runtime.RawExtension`: raw (1) → JSON, or a nested protobuf envelope.
    RawExtension,
    /// A named Go slice (`Verbs`, `ExtraValue`): items (1) → JSON array.
    Items,
    /// `JSONSchemaPropsOrArray`: schema (1) or list (2).
    SchemaOrArray,
    /// `JSONSchemaPropsOrBool`: allows (1) or schema (2).
    SchemaOrBool,
    /// `JSONSchemaPropsOrStringArray`: schema (1) or property list (2).
    SchemaOrStringArray,
}

/// Shorthand constructor used by the generated table.
pub(crate) const fn m(name: &'static str, special: Special, fields: &'static [Field]) -> Message {
    Message {
        name,
        special,
        fields,
    }
}

/// Shorthand constructor used by the generated table.
pub(crate) const fn f(tag: u32, json: &'static str, shape: Shape, ty: Ty) -> Field {
    Field {
        tag,
        json,
        shape,
        ty,
    }
}
