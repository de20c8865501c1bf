//! The seam through which values are changed on their way to disk and back (encryption at rest,
//! as kube-apiserver's storage transformers do it for etcd). The store applies it to the value
//! of every row it writes and reads; its memory (state, watch history) holds plain values only.

use std::borrow::Cow;
use std::fmt::Debug;

use crate::ObjectKey;

/// A value read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromStorage<'a> {
    /// The plain (JSON) value.
    pub plain: Cow<'a, [u8]>,
    /// The stored form is not what [`ValueTransformer::transform_to_storage`] writes today (plain where
    /// encryption is configured, an older key, or encrypted where it is no longer): the store
    /// rewrites such rows when it opens.
    pub stale: bool,
}

/// Changes values between their plain form (in memory, on the API) and their stored form (on
/// disk). Implementations decide per key, typically by `key.resource`.
pub trait ValueTransformer: Send + Sync + Debug {
    /// The stored form of `plain` for `key`.
    fn transform_to_storage<'a>(
        &self,
        key: &ObjectKey,
        plain: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, String>;

    /// The plain form of `stored` for `key`; an error when it cannot be read (a missing or
    /// wrong key), naming what is needed.
    fn transform_from_storage<'a>(
        &self,
        key: &ObjectKey,
        stored: &'a [u8],
    ) -> Result<FromStorage<'a>, String>;
}

/// Values stored as they are (no transformer configured).
#[derive(Debug, Default, Clone, Copy)]
pub struct Identity;

impl ValueTransformer for Identity {
    fn transform_to_storage<'a>(
        &self,
        _: &ObjectKey,
        plain: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, String> {
        Ok(Cow::Borrowed(plain))
    }

    fn transform_from_storage<'a>(
        &self,
        _: &ObjectKey,
        stored: &'a [u8],
    ) -> Result<FromStorage<'a>, String> {
        Ok(FromStorage {
            plain: Cow::Borrowed(stored),
            stale: false,
        })
    }
}
