//! SCIM schemas (RFC 7643 §4, §7, §8.7): attribute definitions for User, Enterprise User and
//! Group, and the discovery documents built from them.
//!
//! The definitions are static data: one source of truth that drives validation, filtering
//! (case-exactness, types), projection (`returned`), PATCH (mutability) and `/Schemas`.

use serde_json::{json, Map, Value};

/// Core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Enterprise User extension URN.
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// List response message URN.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// PATCH request message URN.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Search request message URN.
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// Schema document URN (`/Schemas` entries).
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
/// ResourceType document URN (`/ResourceTypes` entries).
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// ServiceProviderConfig document URN.
pub const SERVICE_PROVIDER_CONFIG_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// An attribute's data type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

/// RFC 7643 §7 `mutability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

/// RFC 7643 §7 `returned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

/// RFC 7643 §7 `uniqueness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

/// One attribute definition. Sub-attributes are only set for `Complex` attributes.
#[derive(Debug)]
pub struct AttrDef {
    pub name: &'static str,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub description: &'static str,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub sub_attributes: &'static [AttrDef],
}

/// A schema: an id (URN) and its top-level attributes.
#[derive(Debug)]
pub struct Schema {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [AttrDef],
}

/// The resource types this service provider serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ResourceKind {
    #[default]
    User,
    Group,
}

impl ResourceKind {
    /// The `resourceType` name, also used in storage keys.
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::User => "User",
            ResourceKind::Group => "Group",
        }
    }
    /// The endpoint path segment (`Users`, `Groups`).
    pub fn endpoint(self) -> &'static str {
        match self {
            ResourceKind::User => "Users",
            ResourceKind::Group => "Groups",
        }
    }
    /// The core schema of this resource type.
    pub fn core_schema(self) -> &'static Schema {
        match self {
            ResourceKind::User => &USER,
            ResourceKind::Group => &GROUP,
        }
    }
    /// The schema extensions this resource type allows (URN schema, required?).
    pub fn extensions(self) -> &'static [(&'static Schema, bool)] {
        match self {
            ResourceKind::User => &USER_EXTENSIONS,
            ResourceKind::Group => &GROUP_EXTENSIONS,
        }
    }

    /// Every resource type, in the order `/ResourceTypes` lists them.
    pub const ALL: [ResourceKind; 2] = [ResourceKind::User, ResourceKind::Group];

    /// The extension schema of this type whose URN is `urn` (case-insensitive).
    pub fn extension(self, urn: &str) -> Option<&'static Schema> {
        self.extensions()
            .iter()
            .map(|(s, _)| *s)
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }
}

/// The result of resolving an attribute path against a resource type's schemas.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    /// The schema the attribute belongs to (core or extension).
    pub schema: &'static Schema,
    /// True when `schema` is an extension: the attribute lives under the URN key in JSON.
    pub extension: bool,
    /// The top-level attribute.
    pub attr: &'static AttrDef,
    /// The sub-attribute, when the path names one.
    pub sub: Option<&'static AttrDef>,
}

impl Resolved {
    /// The definition the path ends at (the sub-attribute if there is one).
    pub fn leaf(&self) -> &'static AttrDef {
        self.sub.unwrap_or(self.attr)
    }
}

impl Schema {
    /// The top-level attribute named `name` (case-insensitive, RFC 7643 §2.1).
    pub fn attribute(&self, name: &str) -> Option<&'static AttrDef> {
        find_attr(self.attributes, name)
    }
}

impl AttrDef {
    /// The sub-attribute named `name` (case-insensitive); `None` for non-complex attributes.
    pub fn sub_attribute(&self, name: &str) -> Option<&'static AttrDef> {
        find_attr(self.sub_attributes, name)
    }

    /// Can a client write this attribute (readWrite, immutable or writeOnly)?
    pub fn is_writable(&self) -> bool {
        self.mutability != Mutability::ReadOnly
    }
}

fn find_attr(attrs: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// Resolve `[uri:]attr[.sub]` case-insensitively for a resource type. Common attributes
/// (`id`, `externalId`, `meta`) resolve for every type. `uri` may be the core schema URN.
///
/// Without a `uri`, the core schema (and the common attributes) win over extensions, so a bare
/// name is never ambiguous. `sub` only resolves on complex attributes.
pub fn resolve(
    kind: ResourceKind,
    uri: Option<&str>,
    attr: &str,
    sub: Option<&str>,
) -> Option<Resolved> {
    let core = kind.core_schema();
    let (schema, extension, def) = match uri {
        Some(u) if u.eq_ignore_ascii_case(core.id) => {
            let def = core.attribute(attr).or_else(|| COMMON.attribute(attr))?;
            (core, false, def)
        }
        Some(u) => {
            let ext = kind.extension(u)?;
            (ext, true, ext.attribute(attr)?)
        }
        None => {
            if let Some(def) = core.attribute(attr).or_else(|| COMMON.attribute(attr)) {
                (core, false, def)
            } else {
                kind.extensions()
                    .iter()
                    .find_map(|(s, _)| s.attribute(attr).map(|d| (*s, true, d)))?
            }
        }
    };
    let sub = match sub {
        Some(s) => Some(def.sub_attribute(s)?),
        None => None,
    };
    Some(Resolved {
        schema,
        extension,
        attr: def,
        sub,
    })
}

// ---------------------------------------------------------------------------------------------
// Discovery documents (RFC 7643 §5-§7)
// ---------------------------------------------------------------------------------------------

fn type_name(ty: AttrType) -> &'static str {
    match ty {
        AttrType::String => "string",
        AttrType::Boolean => "boolean",
        AttrType::Decimal => "decimal",
        AttrType::Integer => "integer",
        AttrType::DateTime => "dateTime",
        AttrType::Binary => "binary",
        AttrType::Reference => "reference",
        AttrType::Complex => "complex",
    }
}

fn mutability_name(m: Mutability) -> &'static str {
    match m {
        Mutability::ReadOnly => "readOnly",
        Mutability::ReadWrite => "readWrite",
        Mutability::Immutable => "immutable",
        Mutability::WriteOnly => "writeOnly",
    }
}

fn returned_name(r: Returned) -> &'static str {
    match r {
        Returned::Always => "always",
        Returned::Never => "never",
        Returned::Default => "default",
        Returned::Request => "request",
    }
}

fn uniqueness_name(u: Uniqueness) -> &'static str {
    match u {
        Uniqueness::None => "none",
        Uniqueness::Server => "server",
        Uniqueness::Global => "global",
    }
}

/// One attribute definition as RFC 7643 §7 writes it. `canonicalValues`, `referenceTypes` and
/// `subAttributes` only appear where they apply, as in the RFC's own §8.7 documents.
fn attr_document(def: &AttrDef) -> Value {
    let mut doc = Map::new();
    doc.insert("name".into(), json!(def.name));
    doc.insert("type".into(), json!(type_name(def.ty)));
    doc.insert("multiValued".into(), json!(def.multi_valued));
    doc.insert("description".into(), json!(def.description));
    doc.insert("required".into(), json!(def.required));
    if def.ty != AttrType::Complex {
        doc.insert("caseExact".into(), json!(def.case_exact));
    }
    doc.insert("mutability".into(), json!(mutability_name(def.mutability)));
    doc.insert("returned".into(), json!(returned_name(def.returned)));
    doc.insert("uniqueness".into(), json!(uniqueness_name(def.uniqueness)));
    if !def.canonical_values.is_empty() {
        doc.insert("canonicalValues".into(), json!(def.canonical_values));
    }
    if def.ty == AttrType::Reference {
        doc.insert("referenceTypes".into(), json!(def.reference_types));
    }
    if def.ty == AttrType::Complex {
        let subs: Vec<Value> = def.sub_attributes.iter().map(attr_document).collect();
        doc.insert("subAttributes".into(), Value::Array(subs));
    }
    Value::Object(doc)
}

fn trim_base(base_url: &str) -> &str {
    base_url.trim_end_matches('/')
}

/// The `/Schemas` documents (one per schema) with complete attribute definitions and `meta`.
/// `base_url` is the absolute SCIM base (e.g. `http://host:port/scim/v2`).
///
/// The common attributes (`id`, `externalId`, `meta`) are not listed: RFC 7643 §3.1 defines
/// them for every resource, outside any schema.
pub fn schema_documents(base_url: &str) -> Vec<Value> {
    let base = trim_base(base_url);
    all_schemas()
        .iter()
        .map(|s| {
            json!({
                "schemas": [SCHEMA_SCHEMA],
                "id": s.id,
                "name": s.name,
                "description": s.description,
                "attributes": s.attributes.iter().map(attr_document).collect::<Vec<_>>(),
                "meta": {
                    "resourceType": "Schema",
                    "location": format!("{base}/Schemas/{}", s.id),
                },
            })
        })
        .collect()
}

/// The `/ResourceTypes` documents.
pub fn resource_type_documents(base_url: &str) -> Vec<Value> {
    let base = trim_base(base_url);
    ResourceKind::ALL
        .iter()
        .map(|kind| {
            let extensions: Vec<Value> = kind
                .extensions()
                .iter()
                .map(|(s, required)| json!({ "schema": s.id, "required": required }))
                .collect();
            let description = match kind {
                ResourceKind::User => "User Account",
                ResourceKind::Group => "Group",
            };
            json!({
                "schemas": [RESOURCE_TYPE_SCHEMA],
                "id": kind.name(),
                "name": kind.name(),
                "endpoint": format!("/{}", kind.endpoint()),
                "description": description,
                "schema": kind.core_schema().id,
                "schemaExtensions": extensions,
                "meta": {
                    "resourceType": "ResourceType",
                    "location": format!("{base}/ResourceTypes/{}", kind.name()),
                },
            })
        })
        .collect()
}

/// The configured limits `/ServiceProviderConfig` states.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// The largest page: `filter.maxResults` and `pagination.maxPageSize`.
    pub max_results: usize,
    /// The page size without `count`: `pagination.defaultPageSize`.
    pub default_page_size: usize,
    /// How long a cursor stays valid: `pagination.cursorTimeout` (s).
    pub cursor_timeout_secs: u64,
    /// `bulk.maxOperations`; 0 means Bulk is not supported.
    pub bulk_max_operations: usize,
    /// `bulk.maxPayloadSize` (bytes).
    pub bulk_max_payload: usize,
}

/// The `/ServiceProviderConfig` document (RFC 7643 §5, with RFC 9865's `pagination`): patch,
/// sort, ETags, filters, both paging methods (index by default, so clients that predate
/// cursors keep what they had), and Bulk as configured.
pub fn service_provider_config(base_url: &str, caps: &Capabilities) -> Value {
    let base = trim_base(base_url);
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": { "supported": true },
        "bulk": {
            "supported": caps.bulk_max_operations > 0,
            "maxOperations": caps.bulk_max_operations,
            "maxPayloadSize": caps.bulk_max_payload,
        },
        "filter": { "supported": true, "maxResults": caps.max_results },
        "pagination": {
            "cursor": true,
            "index": true,
            "defaultPaginationMethod": "index",
            "defaultPageSize": caps.default_page_size,
            "maxPageSize": caps.max_results,
            "cursorTimeout": caps.cursor_timeout_secs,
        },
        "changePassword": { "supported": false },
        "sort": { "supported": true },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token (RFC 6750) in the Authorization header.",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Static definitions
// ---------------------------------------------------------------------------------------------

/// The baseline of every definition: a single-valued, optional, case-insensitive, readWrite
/// attribute returned by default with no uniqueness (RFC 7643 §2.2 defaults). The builder
/// methods below state only what differs, so each definition reads like the RFC's table.
const fn attr(name: &'static str, ty: AttrType, description: &'static str) -> AttrDef {
    AttrDef {
        name,
        ty,
        multi_valued: false,
        description,
        required: false,
        // RFC 7643 §2.3.6: binary values are always case-exact; references are URIs, also
        // compared exactly (the RFC's own schemas mark every `$ref` caseExact).
        case_exact: matches!(ty, AttrType::Binary | AttrType::Reference),
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        uniqueness: Uniqueness::None,
        canonical_values: &[],
        reference_types: &[],
        sub_attributes: &[],
    }
}

impl AttrDef {
    const fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn case_exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    const fn read_only(mut self) -> Self {
        self.mutability = Mutability::ReadOnly;
        self
    }
    const fn write_only(mut self) -> Self {
        self.mutability = Mutability::WriteOnly;
        self
    }
    const fn immutable(mut self) -> Self {
        self.mutability = Mutability::Immutable;
        self
    }
    const fn returned(mut self, returned: Returned) -> Self {
        self.returned = returned;
        self
    }
    const fn unique(mut self) -> Self {
        self.uniqueness = Uniqueness::Server;
        self
    }
    const fn canonical(mut self, values: &'static [&'static str]) -> Self {
        self.canonical_values = values;
        self
    }
    const fn refs(mut self, types: &'static [&'static str]) -> Self {
        self.reference_types = types;
        self
    }
    const fn subs(mut self, subs: &'static [AttrDef]) -> Self {
        self.sub_attributes = subs;
        self
    }
}

use AttrType as T;

/// `type` sub-attribute of the multi-valued attributes, with its canonical values.
const fn type_sub(description: &'static str, canonical: &'static [&'static str]) -> AttrDef {
    attr("type", T::String, description).canonical(canonical)
}

const fn primary_sub(description: &'static str) -> AttrDef {
    attr("primary", T::Boolean, description)
}

const fn display_sub(description: &'static str) -> AttrDef {
    attr("display", T::String, description)
}

// --- Common attributes (RFC 7643 §3.1): every resource type has them, no schema lists them.

static META_SUBS: [AttrDef; 5] = [
    attr("resourceType", T::String, "The name of the resource type of the resource.")
        .read_only()
        .case_exact(),
    attr("created", T::DateTime, "The date and time the resource was added to the service provider.")
        .read_only(),
    attr("lastModified", T::DateTime, "The most recent date and time that the details of this resource were updated at the service provider.")
        .read_only(),
    attr("location", T::Reference, "The URI of the resource being returned.")
        .read_only()
        .refs(&["uri"]),
    attr("version", T::String, "The version of the resource being returned (its entity tag).")
        .read_only()
        .case_exact(),
];

static COMMON_ATTRS: [AttrDef; 3] = [
    attr(
        "id",
        T::String,
        "A unique identifier for a SCIM resource as defined by the service provider.",
    )
    .read_only()
    .case_exact()
    .returned(Returned::Always)
    .unique(),
    attr(
        "externalId",
        T::String,
        "A String that is an identifier for the resource as defined by the provisioning client.",
    )
    .case_exact(),
    attr(
        "meta",
        T::Complex,
        "A complex attribute containing resource metadata.",
    )
    .read_only()
    .subs(&META_SUBS),
];

// --- Core User (RFC 7643 §4.1, §8.7.1).

static NAME_SUBS: [AttrDef; 6] = [
    attr("formatted", T::String, "The full name, including all middle names, titles, and suffixes as appropriate, formatted for display."),
    attr("familyName", T::String, "The family name of the User, or last name in most Western languages."),
    attr("givenName", T::String, "The given name of the User, or first name in most Western languages."),
    attr("middleName", T::String, "The middle name(s) of the User."),
    attr("honorificPrefix", T::String, "The honorific prefix(es) of the User, or title in most Western languages."),
    attr("honorificSuffix", T::String, "The honorific suffix(es) of the User, or suffix in most Western languages."),
];

static EMAIL_SUBS: [AttrDef; 4] = [
    attr("value", T::String, "Email addresses for the user."),
    display_sub("A human-readable name, primarily used for display purposes."),
    type_sub(
        "A label indicating the attribute's function, e.g., 'work' or 'home'.",
        &["work", "home", "other"],
    ),
    primary_sub(
        "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.",
    ),
];

static PHONE_SUBS: [AttrDef; 4] = [
    attr("value", T::String, "Phone number of the User."),
    display_sub("A human-readable name, primarily used for display purposes."),
    type_sub(
        "A label indicating the attribute's function, e.g., 'work', 'home', 'mobile'.",
        &["work", "home", "mobile", "fax", "pager", "other"],
    ),
    primary_sub(
        "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.",
    ),
];

static IMS_SUBS: [AttrDef; 4] = [
    attr(
        "value",
        T::String,
        "Instant messaging address for the User.",
    ),
    display_sub("A human-readable name, primarily used for display purposes."),
    type_sub(
        "A label indicating the attribute's function, e.g., 'aim', 'gtalk', 'xmpp'.",
        &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"],
    ),
    primary_sub(
        "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.",
    ),
];

static PHOTO_SUBS: [AttrDef; 4] = [
    attr("value", T::Reference, "URL of a photo of the User.").refs(&["external"]),
    display_sub("A human-readable name, primarily used for display purposes."),
    type_sub(
        "A label indicating the attribute's function, i.e., 'photo' or 'thumbnail'.",
        &["photo", "thumbnail"],
    ),
    primary_sub(
        "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.",
    ),
];

static ADDRESS_SUBS: [AttrDef; 8] = [
    attr("formatted", T::String, "The full mailing address, formatted for display or use with a mailing label."),
    attr("streetAddress", T::String, "The full street address component, which may include house number, street name, P.O. box, and multi-line extended street address information."),
    attr("locality", T::String, "The city or locality component."),
    attr("region", T::String, "The state or region component."),
    attr("postalCode", T::String, "The zip code or postal code component."),
    attr("country", T::String, "The country name component (ISO 3166-1 alpha-2 code)."),
    type_sub("A label indicating the attribute's function, e.g., 'work' or 'home'.", &["work", "home", "other"]),
    primary_sub("A Boolean value indicating the 'primary' or preferred address for this User."),
];

static USER_GROUPS_SUBS: [AttrDef; 4] = [
    attr("value", T::String, "The identifier of the User's group.")
        .read_only()
        .case_exact(),
    attr(
        "$ref",
        T::Reference,
        "The URI of the corresponding 'Group' resource to which the user belongs.",
    )
    .read_only()
    .refs(&["User", "Group"]),
    display_sub("A human-readable name, primarily used for display purposes.").read_only(),
    type_sub(
        "A label indicating the attribute's function, e.g., 'direct' or 'indirect'.",
        &["direct", "indirect"],
    )
    .read_only(),
];

static ENTITLEMENT_SUBS: [AttrDef; 4] = [
    attr("value", T::String, "The value of an entitlement."),
    display_sub("A human-readable name, primarily used for display purposes."),
    attr(
        "type",
        T::String,
        "A label indicating the attribute's function.",
    ),
    primary_sub(
        "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.",
    ),
];

static ROLE_SUBS: [AttrDef; 4] = [
    attr("value", T::String, "The value of a role."),
    display_sub("A human-readable name, primarily used for display purposes."),
    attr(
        "type",
        T::String,
        "A label indicating the attribute's function.",
    ),
    primary_sub(
        "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.",
    ),
];

static X509_SUBS: [AttrDef; 4] = [
    attr("value", T::Binary, "The value of an X.509 certificate."),
    display_sub("A human-readable name, primarily used for display purposes."),
    attr(
        "type",
        T::String,
        "A label indicating the attribute's function.",
    ),
    primary_sub(
        "A Boolean value indicating the 'primary' or preferred attribute value for this attribute.",
    ),
];

static USER_ATTRS: [AttrDef; 21] = [
    attr("userName", T::String, "Unique identifier for the User, typically used by the user to directly authenticate to the service provider.")
        .required()
        .unique(),
    attr("name", T::Complex, "The components of the user's real name.").subs(&NAME_SUBS),
    attr("displayName", T::String, "The name of the User, suitable for display to end-users."),
    attr("nickName", T::String, "The casual way to address the user in real life."),
    attr("profileUrl", T::Reference, "A fully qualified URL pointing to a page representing the User's online profile.")
        .refs(&["external"]),
    attr("title", T::String, "The user's title, such as \"Vice President\"."),
    attr("userType", T::String, "Used to identify the relationship between the organization and the user."),
    attr("preferredLanguage", T::String, "Indicates the User's preferred written or spoken language (RFC 7231 Accept-Language format)."),
    attr("locale", T::String, "Used to indicate the User's default location for purposes of localizing items such as currency, date time format, or numerical representations."),
    attr("timezone", T::String, "The User's time zone in the 'Olson' time zone database format, e.g., 'America/Los_Angeles'."),
    attr("active", T::Boolean, "A Boolean value indicating the User's administrative status."),
    attr("password", T::String, "The User's cleartext password, write-only: it is never returned.")
        .write_only()
        .returned(Returned::Never),
    attr("emails", T::Complex, "Email addresses for the user.").multi().subs(&EMAIL_SUBS),
    attr("phoneNumbers", T::Complex, "Phone numbers for the User.").multi().subs(&PHONE_SUBS),
    attr("ims", T::Complex, "Instant messaging addresses for the User.").multi().subs(&IMS_SUBS),
    attr("photos", T::Complex, "URLs of photos of the User.").multi().subs(&PHOTO_SUBS),
    attr("addresses", T::Complex, "A physical mailing address for this User.").multi().subs(&ADDRESS_SUBS),
    attr("groups", T::Complex, "A list of groups to which the user belongs, either through direct membership or through nested groups.")
        .multi()
        .read_only()
        .subs(&USER_GROUPS_SUBS),
    attr("entitlements", T::Complex, "A list of entitlements for the User that represent a thing the User has.")
        .multi()
        .subs(&ENTITLEMENT_SUBS),
    attr("roles", T::Complex, "A list of roles for the User that collectively represent who the User is.")
        .multi()
        .subs(&ROLE_SUBS),
    attr("x509Certificates", T::Complex, "A list of certificates issued to the User.")
        .multi()
        .subs(&X509_SUBS),
];

// --- Enterprise User extension (RFC 7643 §4.3, §8.7.1).

static MANAGER_SUBS: [AttrDef; 3] = [
    attr(
        "value",
        T::String,
        "The id of the SCIM resource representing the User's manager.",
    )
    .case_exact(),
    attr(
        "$ref",
        T::Reference,
        "The URI of the SCIM resource representing the User's manager.",
    )
    .refs(&["User"]),
    attr(
        "displayName",
        T::String,
        "The displayName of the User's manager.",
    )
    .read_only(),
];

static ENTERPRISE_ATTRS: [AttrDef; 6] = [
    attr("employeeNumber", T::String, "Numeric or alphanumeric identifier assigned to a person, typically based on order of hire or association with an organization."),
    attr("costCenter", T::String, "Identifies the name of a cost center."),
    attr("organization", T::String, "Identifies the name of an organization."),
    attr("division", T::String, "Identifies the name of a division."),
    attr("department", T::String, "Identifies the name of a department."),
    attr("manager", T::Complex, "The User's manager.").subs(&MANAGER_SUBS),
];

// --- Core Group (RFC 7643 §4.2, §8.7.1).

/// Member sub-attributes. RFC 7643 §4.2 says "sub-attributes of members are immutable": a member
/// is added or removed whole, never edited. `display` is not in the §8.7.1 table but appears in
/// the RFC's examples and Okta sends it; we keep it as the client wrote it (immutable like its
/// siblings) rather than marking it readOnly, because a readOnly `display` would oblige us to
/// look up every member's name on every membership change. `value` is required (a member
/// without an id means nothing) and case-exact (ids are).
static MEMBER_SUBS: [AttrDef; 4] = [
    attr(
        "value",
        T::String,
        "Identifier of the member of this Group.",
    )
    .required()
    .case_exact()
    .immutable(),
    attr(
        "$ref",
        T::Reference,
        "The URI corresponding to a SCIM resource that is a member of this Group.",
    )
    .immutable()
    .refs(&["User", "Group"]),
    attr(
        "display",
        T::String,
        "A human-readable name for the member, primarily used for display purposes.",
    )
    .immutable(),
    type_sub(
        "A label indicating the type of resource, e.g., 'User' or 'Group'.",
        &["User", "Group"],
    )
    .immutable(),
];

static GROUP_ATTRS: [AttrDef; 2] = [
    attr(
        "displayName",
        T::String,
        "A human-readable name for the Group.",
    )
    .required(),
    attr("members", T::Complex, "A list of members of the Group.")
        .multi()
        .subs(&MEMBER_SUBS),
];

static USER: Schema = Schema {
    id: USER_SCHEMA,
    name: "User",
    description: "User Account",
    attributes: &USER_ATTRS,
};

static ENTERPRISE_USER: Schema = Schema {
    id: ENTERPRISE_USER_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: &ENTERPRISE_ATTRS,
};

static GROUP: Schema = Schema {
    id: GROUP_SCHEMA,
    name: "Group",
    description: "Group",
    attributes: &GROUP_ATTRS,
};

/// The pseudo-schema holding the common attributes. Never published: `resolve` reports common
/// attributes as belonging to the resource type's core schema.
static COMMON: Schema = Schema {
    id: "urn:geoscim:common",
    name: "Common",
    description: "Attributes common to all resources (RFC 7643 §3.1)",
    attributes: &COMMON_ATTRS,
};

static USER_EXTENSIONS: [(&Schema, bool); 1] = [(&ENTERPRISE_USER, false)];
static GROUP_EXTENSIONS: [(&Schema, bool); 0] = [];

/// The common attributes (`id`, `externalId`, `meta`), shared by every resource type.
pub fn common_attributes() -> &'static [AttrDef] {
    COMMON.attributes
}

/// Every schema published at `/Schemas`, in a stable order.
pub fn all_schemas() -> [&'static Schema; 3] {
    [&USER, &ENTERPRISE_USER, &GROUP]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_defs(attrs: &'static [AttrDef]) -> Vec<&'static AttrDef> {
        attrs
            .iter()
            .flat_map(|a| std::iter::once(a).chain(a.sub_attributes.iter()))
            .collect()
    }

    #[test]
    fn resolve_is_case_insensitive_and_returns_canonical_names() {
        let r = resolve(ResourceKind::User, None, "USERNAME", None).unwrap();
        assert_eq!(r.attr.name, "userName");
        assert!(!r.extension);
        assert_eq!(r.schema.id, USER_SCHEMA);
        let r = resolve(ResourceKind::User, None, "name", Some("GIVENNAME")).unwrap();
        assert_eq!(r.leaf().name, "givenName");
        let r = resolve(
            ResourceKind::User,
            Some(&USER_SCHEMA.to_uppercase()),
            "emails",
            Some("value"),
        )
        .unwrap();
        assert_eq!(r.attr.name, "emails");
        assert_eq!(r.leaf().name, "value");
    }

    #[test]
    fn common_attributes_resolve_for_every_type() {
        for kind in ResourceKind::ALL {
            for name in ["id", "externalId", "meta"] {
                let r = resolve(kind, None, name, None).unwrap();
                assert_eq!(r.attr.name, name);
                assert!(!r.extension);
                assert_eq!(r.schema.id, kind.core_schema().id);
            }
            let r = resolve(kind, Some(kind.core_schema().id), "id", None).unwrap();
            assert_eq!(r.attr.mutability, Mutability::ReadOnly);
            assert_eq!(r.attr.returned, Returned::Always);
            let r = resolve(kind, None, "meta", Some("lastmodified")).unwrap();
            assert_eq!(r.leaf().ty, AttrType::DateTime);
        }
    }

    #[test]
    fn extension_attributes_resolve_with_or_without_urn() {
        let r = resolve(
            ResourceKind::User,
            Some(ENTERPRISE_USER_SCHEMA),
            "department",
            None,
        )
        .unwrap();
        assert!(r.extension);
        assert_eq!(r.schema.id, ENTERPRISE_USER_SCHEMA);
        let r = resolve(ResourceKind::User, None, "employeeNumber", None).unwrap();
        assert!(r.extension);
        let r = resolve(ResourceKind::User, None, "manager", Some("displayname")).unwrap();
        assert_eq!(r.leaf().mutability, Mutability::ReadOnly);
        // The core attribute wins a bare name; the extension's is reachable with its URN only.
        assert!(resolve(
            ResourceKind::User,
            Some(ENTERPRISE_USER_SCHEMA),
            "userName",
            None
        )
        .is_none());
    }

    #[test]
    fn resolve_rejects_unknown_names_and_foreign_schemas() {
        assert!(resolve(ResourceKind::User, None, "nope", None).is_none());
        assert!(resolve(ResourceKind::User, None, "userName", Some("x")).is_none());
        assert!(resolve(ResourceKind::User, None, "name", Some("nope")).is_none());
        assert!(resolve(ResourceKind::Group, None, "userName", None).is_none());
        assert!(resolve(
            ResourceKind::Group,
            Some(ENTERPRISE_USER_SCHEMA),
            "department",
            None
        )
        .is_none());
        assert!(resolve(ResourceKind::User, Some(GROUP_SCHEMA), "displayName", None).is_none());
        assert!(resolve(ResourceKind::User, Some("urn:x"), "userName", None).is_none());
    }

    #[test]
    fn group_schema_matches_rfc() {
        let members = resolve(ResourceKind::Group, None, "members", None)
            .unwrap()
            .attr;
        assert!(members.multi_valued);
        assert_eq!(members.mutability, Mutability::ReadWrite);
        let value = members.sub_attribute("value").unwrap();
        assert_eq!(value.mutability, Mutability::Immutable);
        let ty = members.sub_attribute("type").unwrap();
        assert_eq!(ty.canonical_values, &["User", "Group"]);
        let r = members.sub_attribute("$ref").unwrap();
        assert_eq!(r.reference_types, &["User", "Group"]);
        assert!(
            resolve(ResourceKind::Group, None, "displayName", None)
                .unwrap()
                .attr
                .required
        );
    }

    #[test]
    fn user_schema_matches_rfc() {
        let get = |n: &str| resolve(ResourceKind::User, None, n, None).unwrap().attr;
        assert!(get("userName").required);
        assert!(!get("userName").case_exact);
        assert_eq!(get("userName").uniqueness, Uniqueness::Server);
        assert_eq!(get("password").mutability, Mutability::WriteOnly);
        assert_eq!(get("password").returned, Returned::Never);
        assert_eq!(get("groups").mutability, Mutability::ReadOnly);
        assert_eq!(get("active").ty, AttrType::Boolean);
        assert_eq!(
            get("x509Certificates").sub_attribute("value").unwrap().ty,
            AttrType::Binary
        );
        assert_eq!(
            get("phoneNumbers")
                .sub_attribute("type")
                .unwrap()
                .canonical_values
                .len(),
            6
        );
        assert_eq!(get("addresses").sub_attributes.len(), 8);
        assert_eq!(get("profileUrl").reference_types, &["external"]);
        assert!(get("externalId").case_exact);
    }

    #[test]
    fn definitions_are_well_formed() {
        for schema in all_schemas().into_iter().chain([&COMMON]) {
            let mut names = std::collections::HashSet::new();
            for a in schema.attributes {
                assert!(
                    names.insert(a.name.to_ascii_lowercase()),
                    "duplicate {}",
                    a.name
                );
                assert_eq!(
                    a.ty == AttrType::Complex,
                    !a.sub_attributes.is_empty(),
                    "{}",
                    a.name
                );
                let mut subs = std::collections::HashSet::new();
                for s in a.sub_attributes {
                    assert!(subs.insert(s.name.to_ascii_lowercase()));
                    assert!(
                        s.sub_attributes.is_empty(),
                        "sub-attributes are one level deep"
                    );
                }
            }
            for d in all_defs(schema.attributes) {
                assert_eq!(
                    d.ty == AttrType::Reference,
                    !d.reference_types.is_empty(),
                    "{}",
                    d.name
                );
                if d.ty == AttrType::Binary {
                    assert!(d.case_exact);
                }
            }
        }
        // No core attribute is shadowed by the common ones or by an extension.
        for kind in ResourceKind::ALL {
            for c in common_attributes() {
                assert!(kind.core_schema().attribute(c.name).is_none());
            }
        }
    }

    #[test]
    fn schema_documents_follow_rfc_7643_section_7() {
        let docs = schema_documents("http://h/scim/v2/");
        assert_eq!(docs.len(), 3);
        let user = &docs[0];
        assert_eq!(user["schemas"], json!([SCHEMA_SCHEMA]));
        assert_eq!(user["id"], USER_SCHEMA);
        assert_eq!(user["name"], "User");
        assert_eq!(user["meta"]["resourceType"], "Schema");
        assert_eq!(
            user["meta"]["location"],
            format!("http://h/scim/v2/Schemas/{USER_SCHEMA}")
        );
        let attrs = user["attributes"].as_array().unwrap();
        let names: Vec<&str> = attrs.iter().map(|a| a["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"userName"));
        assert!(
            !names.contains(&"id") && !names.contains(&"meta") && !names.contains(&"externalId")
        );
        let user_name = &attrs[0];
        assert_eq!(
            user_name,
            &json!({
                "name": "userName", "type": "string", "multiValued": false,
                "description": user_name["description"], "required": true, "caseExact": false,
                "mutability": "readWrite", "returned": "default", "uniqueness": "server",
            })
        );
        let emails = attrs.iter().find(|a| a["name"] == "emails").unwrap();
        assert_eq!(emails["type"], "complex");
        assert_eq!(emails["multiValued"], true);
        let ty = emails["subAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "type")
            .unwrap();
        assert_eq!(ty["canonicalValues"], json!(["work", "home", "other"]));
        let password = attrs.iter().find(|a| a["name"] == "password").unwrap();
        assert_eq!(password["mutability"], "writeOnly");
        assert_eq!(password["returned"], "never");
        let profile = attrs.iter().find(|a| a["name"] == "profileUrl").unwrap();
        assert_eq!(profile["type"], "reference");
        assert_eq!(profile["referenceTypes"], json!(["external"]));
        assert_eq!(docs[1]["id"], ENTERPRISE_USER_SCHEMA);
        assert_eq!(docs[2]["id"], GROUP_SCHEMA);
        let types: Vec<&str> = docs
            .iter()
            .flat_map(|d| d["attributes"].as_array().unwrap())
            .map(|a| a["type"].as_str().unwrap())
            .collect();
        assert!(types.iter().all(|t| [
            "string",
            "boolean",
            "decimal",
            "integer",
            "dateTime",
            "binary",
            "reference",
            "complex"
        ]
        .contains(t)));
    }

    #[test]
    fn resource_type_documents_list_user_and_group() {
        let docs = resource_type_documents("http://h/v2");
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0],
            json!({
                "schemas": [RESOURCE_TYPE_SCHEMA],
                "id": "User", "name": "User", "endpoint": "/Users",
                "description": "User Account", "schema": USER_SCHEMA,
                "schemaExtensions": [{"schema": ENTERPRISE_USER_SCHEMA, "required": false}],
                "meta": {"resourceType": "ResourceType", "location": "http://h/v2/ResourceTypes/User"},
            })
        );
        assert_eq!(docs[1]["endpoint"], "/Groups");
        assert_eq!(docs[1]["schema"], GROUP_SCHEMA);
        assert_eq!(docs[1]["schemaExtensions"], json!([]));
    }

    #[test]
    fn service_provider_config_states_the_limits() {
        let caps = Capabilities {
            max_results: 200,
            default_page_size: 50,
            cursor_timeout_secs: 600,
            bulk_max_operations: 0,
            bulk_max_payload: 1_048_576,
        };
        let c = service_provider_config("http://h/v2", &caps);
        assert_eq!(c["schemas"], json!([SERVICE_PROVIDER_CONFIG_SCHEMA]));
        assert_eq!(c["patch"]["supported"], true);
        assert_eq!(
            c["bulk"],
            json!({"supported": false, "maxOperations": 0, "maxPayloadSize": 1_048_576})
        );
        assert_eq!(
            c["pagination"],
            json!({"cursor": true, "index": true, "defaultPaginationMethod": "index",
                   "defaultPageSize": 50, "maxPageSize": 200, "cursorTimeout": 600})
        );
        let with_bulk = Capabilities {
            bulk_max_operations: 100,
            ..caps
        };
        let c2 = service_provider_config("http://h/v2", &with_bulk);
        assert_eq!(c2["bulk"]["supported"], true);
        assert_eq!(c2["bulk"]["maxOperations"], 100);
        assert_eq!(c["filter"], json!({"supported": true, "maxResults": 200}));
        assert_eq!(c["changePassword"]["supported"], false);
        assert_eq!(c["sort"]["supported"], true);
        assert_eq!(c["etag"]["supported"], true);
        assert_eq!(c["authenticationSchemes"][0]["type"], "oauthbearertoken");
        assert_eq!(c["authenticationSchemes"][0]["primary"], true);
        assert_eq!(c["meta"]["location"], "http://h/v2/ServiceProviderConfig");
    }
}
