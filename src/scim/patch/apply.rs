//! Applying parsed PatchOps to a resource: the semantics the module docs of `super` list.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::{get_ci, prefix, PatchOp, PatchOpKind, PatchOutcome};
use crate::scim::error::{ScimError, ScimResult};
use crate::scim::filter::{self, AttrPath, CompValue, CompareOp, Filter, FilterLimits};
use crate::scim::path::{parse_patch_path, PatchPath};
use crate::scim::resource::{
    normalize_element, normalize_stored, normalize_value, resolve_extension_key, resolve_top_key,
    TopKey,
};
use crate::scim::schema::{resolve, AttrDef, AttrType, Mutability, ResourceKind, Schema};

/// Apply `ops` in order to `resource` (SCIM JSON of type `kind`, as stored). Either all ops apply
/// or the resource is left untouched and the error says which op failed and why.
pub fn apply(
    resource: &mut Value,
    kind: ResourceKind,
    ops: &[PatchOp],
) -> ScimResult<PatchOutcome> {
    let Some(obj) = resource.as_object() else {
        return Err(ScimError::Internal(
            "the stored resource is not a JSON object".into(),
        ));
    };
    let mut work = obj.clone();
    let mut outcome = PatchOutcome::default();
    let mut member_index = None;
    for (i, op) in ops.iter().enumerate() {
        let mut ctx = Ctx {
            work: &mut work,
            kind,
            explicit: &mut outcome.explicit,
            member_index: &mut member_index,
        };
        ctx.apply_op(op)
            .map_err(|e| prefix(e, &format!("operation {} ({})", i + 1, op.op.name())))?;
    }
    let result = normalize_stored(kind, &Value::Object(work))
        .map_err(|e| prefix(e, "the patched resource would be invalid"))?;
    *resource = result;
    Ok(outcome)
}

/// A resolved top-level attribute: where it lives and what it is.
#[derive(Debug, Clone, Copy)]
struct Target {
    /// The extension schema, when the attribute lives under its URN key.
    ext: Option<&'static Schema>,
    attr: &'static AttrDef,
}

impl Target {
    /// The name reported in [`PatchOutcome::explicit`] and in error messages.
    fn label(self) -> String {
        match self.ext {
            None => self.attr.name.to_string(),
            Some(s) => format!("{}:{}", s.id, self.attr.name),
        }
    }

    fn is_members_like(self) -> bool {
        // Elements identified by their `value` alone (group members): a required, immutable
        // `value` means two elements with the same id are the same member.
        self.attr.multi_valued
            && self
                .attr
                .sub_attribute("value")
                .is_some_and(|v| v.required && v.mutability == Mutability::Immutable)
    }
}

/// The state of one PATCH application.
struct Ctx<'a> {
    work: &'a mut Map<String, Value>,
    kind: ResourceKind,
    explicit: &'a mut Vec<String>,
    /// The member ids of a members-like attribute, kept across ops while only `add` touches
    /// it, so a PATCH of 1,000 single-member add ops does not rebuild it 1,000 times. Every
    /// other way of reaching the list (`list`, `set`, `unset`) drops it.
    member_index: &'a mut Option<MemberIndex>,
}

/// The ids of the elements of one members-like attribute.
struct MemberIndex {
    attr: &'static AttrDef,
    ids: HashSet<String>,
}

impl Ctx<'_> {
    fn apply_op(&mut self, op: &PatchOp) -> ScimResult<()> {
        let Some(path) = &op.path else {
            return match op.op {
                PatchOpKind::Remove => Err(ScimError::NoTarget(
                    "'remove' needs a 'path' naming what to remove".into(),
                )),
                _ => self.apply_without_path(op.op, op.value.as_ref().unwrap_or(&Value::Null)),
            };
        };
        if let Some(ext) = self.extension_container(path) {
            return self.apply_to_extension(op, ext);
        }
        let resolved = resolve(
            self.kind,
            path.attr.uri.as_deref(),
            &path.attr.name,
            path.attr.sub.as_deref(),
        )
        .ok_or_else(|| {
            ScimError::InvalidPath(format!(
                "'{}' names no attribute of a {}",
                show(&path.attr),
                self.kind.name()
            ))
        })?;
        let target = Target {
            ext: resolved.extension.then_some(resolved.schema),
            attr: resolved.attr,
        };
        self.note(target);
        let value = op.value.as_ref();
        match (&path.filter, resolved.sub) {
            (None, None) => match op.op {
                PatchOpKind::Add => self.add(target, value.unwrap_or(&Value::Null)),
                PatchOpKind::Replace => self.replace(target, value.unwrap_or(&Value::Null)),
                PatchOpKind::Remove => self.remove(target, value),
            },
            (None, Some(sub)) => match op.op {
                PatchOpKind::Remove => self.remove_sub(target, sub),
                kind => self.set_sub(target, sub, value.unwrap_or(&Value::Null), kind),
            },
            (Some(filter), _) => {
                let sub = match &path.sub_after_filter {
                    None => None,
                    Some(s) => Some(target.attr.sub_attribute(s).ok_or_else(|| {
                        ScimError::InvalidPath(format!(
                            "'{}' has no sub-attribute '{s}'",
                            target.label()
                        ))
                    })?),
                };
                self.filtered(op.op, target, filter, sub, value)
            }
        }
    }

    /// A path naming an extension schema itself (`urn:…:enterprise:2.0:User`), which the path
    /// parser reads as URI `urn:…:enterprise:2.0` and attribute `User`.
    fn extension_container(&self, path: &PatchPath) -> Option<&'static Schema> {
        if path.filter.is_some() || path.attr.sub.is_some() {
            return None;
        }
        let full = match &path.attr.uri {
            Some(uri) => format!("{uri}:{}", path.attr.name),
            None => path.attr.name.clone(),
        };
        self.kind.extension(&full)
    }

    fn apply_to_extension(&mut self, op: &PatchOp, ext: &'static Schema) -> ScimResult<()> {
        match op.op {
            PatchOpKind::Remove => {
                for def in ext.attributes {
                    let target = Target {
                        ext: Some(ext),
                        attr: def,
                    };
                    if self.get(target).is_some() {
                        self.note(target);
                        self.remove(target, None)?;
                    }
                }
                Ok(())
            }
            kind => {
                let mut wrapped = Map::new();
                wrapped.insert(ext.id.to_string(), op.value.clone().unwrap_or(Value::Null));
                self.apply_without_path(kind, &Value::Object(wrapped))
            }
        }
    }

    /// add/replace without a path: the value is an object of attributes (RFC 7644 §3.5.2.1),
    /// whose keys may be dotted (`name.givenName`), URN-qualified, extension URNs, or whole
    /// paths with a value filter (`emails[type eq "work"].value`), each applied as that path.
    fn apply_without_path(&mut self, kind: PatchOpKind, value: &Value) -> ScimResult<()> {
        let Some(obj) = value.as_object() else {
            return Err(ScimError::InvalidValue(format!(
                "without a 'path', the value of '{}' must be an object of attributes",
                kind.name()
            )));
        };
        for (key, v) in obj {
            match resolve_top_key(self.kind, key) {
                // A key that is a whole path with a value filter
                // (`"emails[type eq \"work\"].value": "x"`): apply it as that path.
                None if key.contains('[') => {
                    let path = parse_patch_path(key, &FilterLimits::default())?;
                    self.apply_op(&PatchOp {
                        op: kind,
                        path: Some(path),
                        value: Some(v.clone()),
                    })?;
                }
                None => {
                    return Err(ScimError::InvalidValue(format!(
                        "unknown attribute '{key}' for resource type {}",
                        self.kind.name()
                    )))
                }
                Some(TopKey::Schemas) => {}
                Some(TopKey::Extension(ext)) => match v {
                    Value::Null => {}
                    Value::Object(inner) => {
                        for (k, v) in inner {
                            let Some((attr, sub)) = resolve_extension_key(ext, k)? else {
                                continue;
                            };
                            self.write_key(
                                kind,
                                Target {
                                    ext: Some(ext),
                                    attr,
                                },
                                sub,
                                v,
                            )?;
                        }
                    }
                    _ => {
                        return Err(ScimError::InvalidValue(format!(
                            "extension '{}' must be an object of its attributes",
                            ext.id
                        )))
                    }
                },
                Some(TopKey::Attr {
                    extension,
                    attr,
                    sub,
                }) => self.write_key(
                    kind,
                    Target {
                        ext: extension,
                        attr,
                    },
                    sub,
                    v,
                )?,
            }
        }
        Ok(())
    }

    /// One key of a path-less add/replace value.
    fn write_key(
        &mut self,
        kind: PatchOpKind,
        target: Target,
        sub: Option<&'static AttrDef>,
        v: &Value,
    ) -> ScimResult<()> {
        // A client echoing server state it read (an unchanged `id` or `meta`) is not trying
        // to change it; anything else aimed at a read-only attribute is refused below.
        if target.attr.mutability == Mutability::ReadOnly
            && sub.is_none()
            && self.get(target) == Some(v)
        {
            return Ok(());
        }
        self.note(target);
        match sub {
            None if kind == PatchOpKind::Add => self.add(target, v),
            None => self.replace(target, v),
            Some(sub) => self.set_sub(target, sub, v, kind),
        }
    }

    fn note(&mut self, target: Target) {
        let label = target.label();
        if !self.explicit.contains(&label) {
            self.explicit.push(label);
        }
    }

    // --- access -------------------------------------------------------------------------------

    fn get(&self, t: Target) -> Option<&Value> {
        match t.ext {
            None => self.work.get(t.attr.name),
            Some(s) => self.work.get(s.id)?.as_object()?.get(t.attr.name),
        }
        .filter(|v| !v.is_null())
    }

    fn container(&mut self, ext: Option<&'static Schema>) -> &mut Map<String, Value> {
        let Some(s) = ext else {
            return self.work;
        };
        let slot = self
            .work
            .entry(s.id.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        match slot {
            Value::Object(m) => m,
            _ => unreachable!("just made an object"),
        }
    }

    fn set(&mut self, t: Target, v: Value) {
        *self.member_index = None;
        self.container(t.ext).insert(t.attr.name.to_string(), v);
    }

    fn unset(&mut self, t: Target) {
        *self.member_index = None;
        self.container(t.ext).remove(t.attr.name);
    }

    /// The list of a multi-valued attribute, created empty when absent.
    fn list(&mut self, t: Target) -> &mut Vec<Value> {
        *self.member_index = None;
        let slot = self
            .container(t.ext)
            .entry(t.attr.name.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if !slot.is_array() {
            *slot = Value::Array(Vec::new());
        }
        match slot {
            Value::Array(a) => a,
            _ => unreachable!("just made an array"),
        }
    }

    // --- mutability ---------------------------------------------------------------------------

    fn check_write(&self, t: Target, new: Option<&Value>) -> ScimResult<()> {
        match t.attr.mutability {
            Mutability::ReadOnly => Err(ScimError::Mutability(format!(
                "attribute '{}' is read-only",
                t.label()
            ))),
            Mutability::Immutable => match self.get(t) {
                Some(current) if Some(current) != new => Err(ScimError::Mutability(format!(
                    "attribute '{}' is immutable: it can be set once but not changed or removed",
                    t.label()
                ))),
                _ => Ok(()),
            },
            Mutability::ReadWrite | Mutability::WriteOnly => Ok(()),
        }
    }

    fn check_sub_write(
        t: Target,
        sub: &AttrDef,
        current: Option<&Value>,
        new: Option<&Value>,
    ) -> ScimResult<()> {
        match sub.mutability {
            Mutability::ReadOnly => Err(ScimError::Mutability(format!(
                "sub-attribute '{}.{}' is read-only",
                t.label(),
                sub.name
            ))),
            Mutability::Immutable => match current {
                Some(c) if !c.is_null() && Some(c) != new => Err(ScimError::Mutability(format!(
                    "sub-attribute '{}.{}' is immutable: it can be set once but not changed or removed",
                    t.label(),
                    sub.name
                ))),
                _ => Ok(()),
            },
            Mutability::ReadWrite | Mutability::WriteOnly => Ok(()),
        }
    }

    // --- whole attributes ---------------------------------------------------------------------

    fn add(&mut self, t: Target, value: &Value) -> ScimResult<()> {
        if t.attr.mutability == Mutability::ReadOnly {
            return self.check_write(t, None);
        }
        let Some(new) = normalize_value(t.attr, value, &t.label())? else {
            return Ok(()); // adding "nothing" (null, []) changes nothing
        };
        if !t.attr.multi_valued {
            let merged = match (self.get(t), &new) {
                (Some(Value::Object(old)), Value::Object(add)) => {
                    let mut m = old.clone();
                    m.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
                    Value::Object(m)
                }
                _ => new,
            };
            self.check_write(t, Some(&merged))?;
            self.set(t, merged);
            return Ok(());
        }
        self.check_write(t, None)?;
        let Value::Array(items) = new else {
            return Ok(());
        };
        let members_like = t.is_members_like();
        let index = self
            .member_index
            .take()
            .filter(|ix| std::ptr::eq(ix.attr, t.attr));
        let list = self.list(t);
        let start = list.len();
        if members_like {
            let mut seen = match index {
                Some(ix) => ix.ids,
                None => list
                    .iter()
                    .filter_map(member_id)
                    .map(str::to_string)
                    .collect(),
            };
            for item in items {
                match member_id(&item) {
                    Some(id) if !seen.insert(id.to_string()) => {}
                    _ => list.push(item),
                }
            }
            let touched: Vec<usize> = (start..list.len()).collect();
            settle_primary(list, &touched);
            *self.member_index = Some(MemberIndex {
                attr: t.attr,
                ids: seen,
            });
            return Ok(());
        }
        // Other lists are short (a user's emails): a linear duplicate check is fine.
        for item in items {
            if !list.contains(&item) {
                list.push(item);
            }
        }
        let touched: Vec<usize> = (start..list.len()).collect();
        settle_primary(list, &touched);
        Ok(())
    }

    fn replace(&mut self, t: Target, value: &Value) -> ScimResult<()> {
        if t.attr.mutability == Mutability::ReadOnly {
            return self.check_write(t, None);
        }
        let new = normalize_value(t.attr, value, &t.label())?;
        let Some(new) = new else {
            return self.remove(t, None);
        };
        let new = match (t.attr.multi_valued, self.get(t), new) {
            // RFC 7644 §3.5.2.3: sub-attributes the value does not mention are left unchanged.
            (false, Some(Value::Object(old)), Value::Object(add)) => {
                let mut m = old.clone();
                m.extend(add);
                Value::Object(m)
            }
            (_, _, new) => new,
        };
        self.check_write(t, Some(&new))?;
        self.set(t, new);
        Ok(())
    }

    fn remove(&mut self, t: Target, value: Option<&Value>) -> ScimResult<()> {
        if self.get(t).is_none() {
            return Ok(()); // already unassigned: removing again is idempotent
        }
        if t.attr.mutability != Mutability::ReadWrite && t.attr.mutability != Mutability::WriteOnly
        {
            return Err(ScimError::Mutability(format!(
                "attribute '{}' is {} and cannot be removed",
                t.label(),
                if t.attr.mutability == Mutability::ReadOnly {
                    "read-only"
                } else {
                    "immutable"
                }
            )));
        }
        let listed = value.filter(|v| !v.is_null() && t.attr.multi_valued);
        let Some(listed) = listed else {
            if t.attr.required && t.ext.is_none() {
                return Err(ScimError::InvalidValue(format!(
                    "attribute '{}' is required and cannot be removed",
                    t.label()
                )));
            }
            self.unset(t);
            return Ok(());
        };
        // Remove only the listed values (Entra's member removal), never the whole attribute.
        let items: &[Value] = match listed {
            Value::Array(a) => a,
            one => std::slice::from_ref(one),
        };
        if t.is_members_like() {
            let ids: HashSet<&str> = items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => get_ci(o, "value").and_then(Value::as_str),
                    _ => None,
                })
                .collect();
            self.list(t)
                .retain(|m| !member_id(m).is_some_and(|id| ids.contains(id)));
        } else {
            let mut doomed = Vec::with_capacity(items.len());
            for item in items {
                if let Some(v) = normalize_element(t.attr, item, &t.label())? {
                    doomed.push(v);
                }
            }
            self.list(t).retain(|v| !doomed.contains(v));
        }
        Ok(())
    }

    // --- sub-attributes without a filter ------------------------------------------------------

    /// add/replace `attr.sub`: on a complex attribute, set the sub-attribute; on a multi-valued
    /// one, set it on every element (creating one element when there is none).
    fn set_sub(
        &mut self,
        t: Target,
        sub: &'static AttrDef,
        value: &Value,
        kind: PatchOpKind,
    ) -> ScimResult<()> {
        if t.attr.mutability == Mutability::ReadOnly {
            return self.check_write(t, None);
        }
        let label = format!("{}.{}", t.label(), sub.name);
        if value.is_array() {
            return Err(ScimError::InvalidValue(format!(
                "'{label}' is single-valued but a list was given"
            )));
        }
        let new = normalize_element(sub, value, &label)?;
        let Some(new) = new else {
            return match kind {
                PatchOpKind::Add => Ok(()),
                _ => self.remove_sub(t, sub),
            };
        };
        if t.attr.multi_valued {
            let list = self.list(t);
            if list.is_empty() {
                let mut m = Map::new();
                m.insert(sub.name.to_string(), new);
                list.push(Value::Object(m));
                return Ok(());
            }
            for el in list.iter() {
                Self::check_sub_write(t, sub, el.get(sub.name), Some(&new))?;
            }
            for el in list.iter_mut() {
                if let Value::Object(m) = el {
                    m.insert(sub.name.to_string(), new.clone());
                }
            }
            return Ok(());
        }
        Self::check_sub_write(
            t,
            sub,
            self.get(t).and_then(|o| o.get(sub.name)),
            Some(&new),
        )?;
        let mut obj = match self.get(t) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        obj.insert(sub.name.to_string(), new);
        self.set(t, Value::Object(obj));
        Ok(())
    }

    fn remove_sub(&mut self, t: Target, sub: &'static AttrDef) -> ScimResult<()> {
        if t.attr.mutability == Mutability::ReadOnly {
            return self.check_write(t, None);
        }
        if t.attr.multi_valued {
            if self.get(t).is_none() {
                return Ok(());
            }
            let list = self.list(t);
            for el in list.iter() {
                Self::check_sub_write(t, sub, el.get(sub.name), None)?;
            }
            for el in list.iter_mut() {
                if let Value::Object(m) = el {
                    m.remove(sub.name);
                }
            }
            return Ok(());
        }
        let Some(Value::Object(obj)) = self.get(t) else {
            return Ok(());
        };
        Self::check_sub_write(t, sub, obj.get(sub.name), None)?;
        let mut obj = obj.clone();
        obj.remove(sub.name);
        self.set(t, Value::Object(obj));
        Ok(())
    }

    // --- value filters ------------------------------------------------------------------------

    fn filtered(
        &mut self,
        kind: PatchOpKind,
        t: Target,
        filter: &Filter,
        sub: Option<&'static AttrDef>,
        value: Option<&Value>,
    ) -> ScimResult<()> {
        if !t.attr.multi_valued || t.attr.ty != AttrType::Complex {
            return Err(ScimError::InvalidPath(format!(
                "a value filter needs a multi-valued complex attribute; '{}' is not one",
                t.label()
            )));
        }
        if t.attr.mutability == Mutability::ReadOnly {
            return self.check_write(t, None);
        }
        if let Some(sub) = sub {
            if sub.mutability == Mutability::ReadOnly {
                return Self::check_sub_write(t, sub, None, None);
            }
        }
        let label = match sub {
            Some(s) => format!("{}.{}", t.label(), s.name),
            None => t.label(),
        };
        let kind_ = self.kind;
        let hits = {
            let list = match self.get(t) {
                Some(Value::Array(a)) => a.as_slice(),
                _ => &[],
            };
            matching(kind_, t, filter, list)
        };

        if kind == PatchOpKind::Remove {
            let list = self.list(t);
            match sub {
                Some(sub) => {
                    for &i in &hits {
                        Self::check_sub_write(t, sub, list[i].get(sub.name), None)?;
                    }
                    for &i in &hits {
                        if let Value::Object(m) = &mut list[i] {
                            m.remove(sub.name);
                        }
                    }
                }
                None => {
                    let doomed: HashSet<usize> = hits.into_iter().collect();
                    let mut i = 0;
                    list.retain(|_| {
                        i += 1;
                        !doomed.contains(&(i - 1))
                    });
                }
            }
            return Ok(());
        }

        let value = value.unwrap_or(&Value::Null);
        // The new value: a sub-attribute value, or a whole element.
        let new = match sub {
            Some(s) => {
                if value.is_array() {
                    return Err(ScimError::InvalidValue(format!(
                        "'{label}' is single-valued but a list was given"
                    )));
                }
                normalize_element(s, value, &label)?
            }
            None => {
                if !value.is_object() {
                    return Err(ScimError::InvalidValue(format!(
                        "the value for '{label}[...]' must be an object of its sub-attributes"
                    )));
                }
                normalize_element(t.attr, value, &label)?
            }
        };

        if hits.is_empty() {
            let Some(template) = eq_template(t, filter) else {
                return Err(ScimError::NoTarget(format!(
                    "no value of '{}' matches the filter of the path",
                    t.label()
                )));
            };
            // Create the element the filter describes, with the value written into it.
            let mut el = template;
            match (sub, new) {
                (_, None) => return Ok(()),
                (Some(s), Some(v)) => {
                    el.insert(s.name.to_string(), v);
                }
                (None, Some(Value::Object(m))) => el.extend(m),
                (None, Some(_)) => {}
            }
            let Some(el) = normalize_element(t.attr, &Value::Object(el), &label)? else {
                return Ok(());
            };
            let list = self.list(t);
            list.push(el);
            let touched = [list.len() - 1];
            settle_primary(list, &touched);
            return Ok(());
        }

        let list = self.list(t);
        match sub {
            Some(s) => {
                for &i in &hits {
                    Self::check_sub_write(t, s, list[i].get(s.name), new.as_ref())?;
                }
                for &i in &hits {
                    if let Value::Object(m) = &mut list[i] {
                        match &new {
                            Some(v) => {
                                m.insert(s.name.to_string(), v.clone());
                            }
                            None => {
                                m.remove(s.name);
                            }
                        }
                    }
                }
            }
            None => {
                let new_obj = match &new {
                    Some(Value::Object(m)) => m.clone(),
                    _ => Map::new(),
                };
                for &i in &hits {
                    let old = list[i].as_object().cloned().unwrap_or_default();
                    let next = match kind {
                        // add merges into the matching element; replace swaps it whole.
                        PatchOpKind::Add => {
                            let mut m = old.clone();
                            m.extend(new_obj.iter().map(|(k, v)| (k.clone(), v.clone())));
                            m
                        }
                        _ => new_obj.clone(),
                    };
                    for s in t.attr.sub_attributes {
                        Self::check_sub_write(t, s, old.get(s.name), next.get(s.name))?;
                    }
                    list[i] = Value::Object(next);
                }
            }
        }
        settle_primary(list, &hits);
        Ok(())
    }
}

/// The id of a group member (its `value`).
fn member_id(v: &Value) -> Option<&str> {
    v.get("value").and_then(Value::as_str)
}

/// If any touched element is now primary, no untouched one may stay primary (RFC 7644 §3.5.2:
/// setting `primary` on one value unsets it on the others).
fn settle_primary(list: &mut [Value], touched: &[usize]) {
    let is_primary = |v: &Value| v.get("primary") == Some(&Value::Bool(true));
    if !touched.iter().any(|&i| list.get(i).is_some_and(is_primary)) {
        return;
    }
    let touched: HashSet<usize> = touched.iter().copied().collect();
    for (i, el) in list.iter_mut().enumerate() {
        if !touched.contains(&i) && is_primary(el) {
            if let Value::Object(m) = el {
                m.insert("primary".into(), Value::Bool(false));
            }
        }
    }
}

/// Indices of the elements of `list` (values of `t`) that match the value filter.
fn matching(kind: ResourceKind, t: Target, filter: &Filter, list: &[Value]) -> Vec<usize> {
    // Fast path for `sub eq "literal"` on a case-exact sub-attribute (`members[value eq "id"]`,
    // what IdPs send for member removal): a plain string comparison per element.
    if let Filter::Compare {
        path: AttrPath {
            uri: None,
            name,
            sub: None,
        },
        op: CompareOp::Eq,
        value: CompValue::Str(lit),
    } = filter
    {
        if let Some(sub) = t.attr.sub_attribute(name) {
            if sub.case_exact
                && matches!(
                    sub.ty,
                    AttrType::String | AttrType::Reference | AttrType::Binary
                )
            {
                return list
                    .iter()
                    .enumerate()
                    .filter(|(_, el)| {
                        el.get(sub.name).and_then(Value::as_str) == Some(lit.as_str())
                    })
                    .map(|(i, _)| i)
                    .collect();
            }
        }
    }
    // General case: evaluate `attr[filter]` against a resource holding just that element, so
    // the filter module's type and case-exactness rules apply unchanged.
    let wrapped = Filter::ValuePath {
        path: AttrPath {
            uri: t.ext.map(|s| s.id.to_string()),
            name: t.attr.name.to_string(),
            sub: None,
        },
        filter: Box::new(filter.clone()),
    };
    list.iter()
        .enumerate()
        .filter(|(_, el)| {
            let mut holder = Map::new();
            holder.insert(t.attr.name.to_string(), Value::Array(vec![(*el).clone()]));
            let resource = match t.ext {
                None => Value::Object(holder),
                Some(s) => {
                    let mut root = Map::new();
                    root.insert(s.id.to_string(), Value::Object(holder));
                    Value::Object(root)
                }
            };
            filter::matches(&wrapped, &resource, kind)
        })
        .map(|(i, _)| i)
        .collect()
}

/// The element a filter of `eq` terms joined by `and` describes (`type eq "work"` ->
/// `{"type": "work"}`), or `None` when the filter is anything else.
fn eq_template(t: Target, filter: &Filter) -> Option<Map<String, Value>> {
    fn walk(t: Target, f: &Filter, out: &mut Map<String, Value>) -> bool {
        match f {
            Filter::And(a, b) => walk(t, a, out) && walk(t, b, out),
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value,
            } => {
                if path.sub.is_some() {
                    return false;
                }
                if let Some(uri) = &path.uri {
                    let owner = t.ext.map_or("", |s| s.id);
                    if !uri.eq_ignore_ascii_case(owner) {
                        return false;
                    }
                }
                let Some(sub) = t.attr.sub_attribute(&path.name) else {
                    return false;
                };
                let v = match value {
                    CompValue::Str(s) => Value::String(s.clone()),
                    CompValue::Num(n) => Value::Number(n.clone()),
                    CompValue::Bool(b) => Value::Bool(*b),
                    CompValue::Null => return false,
                };
                out.insert(sub.name.to_string(), v);
                true
            }
            _ => false,
        }
    }
    let mut out = Map::new();
    walk(t, filter, &mut out).then_some(out)
}

fn show(p: &AttrPath) -> String {
    let mut s = String::new();
    if let Some(u) = &p.uri {
        s.push_str(u);
        s.push(':');
    }
    s.push_str(&p.name);
    if let Some(sub) = &p.sub {
        s.push('.');
        s.push_str(sub);
    }
    s
}
