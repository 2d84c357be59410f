//! Command line: `up`, `serve`, `token create`, `client create|rotate`, `signing-key create`,
//! `certs`, `conflicts` and `idp-sim`. Thin: parse, call the library, print.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::server;

/// geoscim: an active-active, multi-region SCIM 2.0 service provider.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the ready-made local cluster (regions/local: three regions on loopback) and print
    /// each region's SCIM base URL and a token; Ctrl-C stops every region.
    Up {
        /// The folder of region files.
        #[arg(long, default_value = "regions/local")]
        regions: PathBuf,
    },
    /// Run one region: SCIM API, /health and /metrics.
    Serve {
        /// The region's config file (see README: every key can be overridden by GEOSCIM_* env).
        #[arg(long)]
        config: PathBuf,
    },
    /// Create the cluster CA (or reuse DIR/ca.pem + ca.key) and a certificate per region, for
    /// the replication transport.
    Certs {
        /// The directory to write `ca.pem`, `ca.key`, `<region>.pem` and `<region>.key` into.
        #[arg(long)]
        out: PathBuf,
        /// The regions to issue certificates for, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
        /// Replace existing region certificates and keys (the CA is always reused if present).
        #[arg(long)]
        force: bool,
    },
    /// Manage bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage OAuth 2.0 clients (client credentials at `/oauth/token`).
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Manage the Ed25519 keys regions sign OAuth access tokens with.
    SigningKey {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
    /// A provisioning client that follows DNS: resolves the service (or a tenant) name at the
    /// given DNS servers, runs a bounded IdP-like workload with retries, reads every
    /// acknowledged write back from every region and reports what it saw.
    IdpSim(crate::idp_sim::Args),
    /// Ask a DNS server one question (no dnsutils needed) and print the answer: response code,
    /// addresses and TTL, the echoed ECS scope. For trying the responder and for tests.
    DnsQuery {
        /// The server (address:port).
        #[arg(long)]
        server: std::net::SocketAddr,
        /// The name to ask for.
        #[arg(long, default_value = "scim.geoscim.test")]
        name: String,
        /// The record type (A, AAAA, SOA, NS, SRV…).
        #[arg(long = "type", default_value = "A")]
        qtype: String,
        /// An EDNS Client Subnet to send (e.g. 10.3.0.0/24).
        #[arg(long)]
        subnet: Option<ipnet::IpNet>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the conflict log of a region (its admin API), as a table or as JSON.
    Conflicts {
        /// The region's base URL (without `/admin/v1`).
        #[arg(long, default_value = "https://127.0.1.1:8080")]
        url: String,
        /// An admin token (`geoscim token create --admin`); tenant tokens are refused.
        #[arg(long, env = "GEOSCIM_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        /// A PEM file of CA certificates to trust for an `https://` URL, besides the system's
        /// roots (for `geoscim up`: its cluster CA, `build/local/certs/ca.pem`).
        #[arg(long)]
        cacert: Option<PathBuf>,
        #[command(flatten)]
        filter: crate::admin_client::ConflictFilter,
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token and the config lines that accept it (only the hash goes in the config).
    Create {
        /// The tenant (IdP connection) the token acts for.
        #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
        tenant: Option<String>,
        /// Create an admin token (the admin API, `/admin/v1`, every tenant) instead.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Print a new client id and secret (shown once) and the `[[oauth.clients]]` lines for
    /// every region's config (only the secret's hash goes in the config).
    Create {
        /// The tenant (IdP connection) the client's tokens act for.
        #[arg(long)]
        tenant: String,
    },
    /// Print a new secret for an existing client and its hash, to add as the client's second
    /// `secret_sha256` while the IdP moves to it (see the README, "Rotating a client secret").
    Rotate {
        /// The client id.
        #[arg(long)]
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) and print the config lines:
    /// `[oauth.signing_key]` for this region, `[[oauth.keys]]` for every region.
    Create {
        /// The key id tokens name (e.g. `eu-2026-12`): new per key, so keys can overlap.
        #[arg(long)]
        kid: String,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// Run the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Up { regions } => crate::local_cluster::up(&regions).await,
        Command::IdpSim(args) => idp_sim(args).await,
        Command::DnsQuery {
            server,
            name,
            qtype,
            subnet,
            json,
        } => dns_query(server, &name, &qtype, subnet, json).await,
        Command::Conflicts {
            url,
            token,
            cacert,
            filter,
            json,
        } => conflicts(&url, &token, cacert.as_deref(), filter, json).await,
        Command::Certs {
            out,
            regions,
            force,
        } => certs(&out, &regions, force),
        Command::Client { command } => {
            print!("{}", client_command(command)?);
            Ok(())
        }
        Command::SigningKey {
            command: SigningKeyCommand::Create { kid, out, force },
        } => {
            print!("{}", signing_key_create(&kid, &out, force)?);
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Create { admin: true, .. },
        } => {
            let token = server::new_token_text();
            println!("admin token: {token}");
            println!("# add to every region's config (only the hash is stored):");
            println!("[[admin_tokens]]");
            println!("sha256 = \"{}\"", crate::api::token_hash(&token));
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Create { tenant, .. },
        } => {
            let tenant = tenant.unwrap_or_default();
            anyhow::ensure!(
                crate::ids::is_valid_name(&tenant),
                "tenant must be 1-63 characters of a-z, 0-9, '-' and '_'"
            );
            let token = server::new_token_text();
            println!("token: {token}");
            println!("# add to the region's config (only the hash is stored):");
            println!("[[tokens]]");
            println!("tenant = \"{tenant}\"");
            println!("sha256 = \"{}\"", crate::api::token_hash(&token));
            Ok(())
        }
    }
}

/// What `client create` and `client rotate` print.
fn client_command(command: ClientCommand) -> anyhow::Result<String> {
    use crate::oauth;
    let secret = oauth::new_client_secret();
    let hash = oauth::secret_hash(&secret);
    Ok(match command {
        ClientCommand::Create { tenant } => {
            anyhow::ensure!(
                crate::ids::is_valid_name(&tenant),
                "tenant must be 1-63 characters of a-z, 0-9, '-' and '_'"
            );
            let id = oauth::new_client_id();
            format!(
                "client_id: {id}\nclient_secret: {secret}\n\
                 # (the secret is shown once) add to every region's config (only the hash):\n\
                 [[oauth.clients]]\nclient_id = \"{id}\"\ntenant = \"{tenant}\"\n\
                 secret_sha256 = [\"{hash}\"]\n"
            )
        }
        ClientCommand::Rotate { client_id } => {
            anyhow::ensure!(
                crate::config::is_valid_client_id(&client_id),
                "client id must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-' and '~'"
            );
            format!(
                "client_id: {client_id}\nclient_secret: {secret}\n\
                 # (the secret is shown once) in every region's config, add this hash as the\n\
                 # second entry of the client's secret_sha256 (both secrets work), move the IdP\n\
                 # to the new secret, then remove the old hash:\n\
                 secret_sha256 = [\"<current hash>\", \"{hash}\"]\n"
            )
        }
    })
}

/// Write a new signing key and say what to put in which config.
fn signing_key_create(kid: &str, out: &std::path::Path, force: bool) -> anyhow::Result<String> {
    anyhow::ensure!(
        crate::config::is_valid_kid(kid),
        "kid must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    );
    let key = crate::oauth::SigningKey::generate()?;
    key.write(out, force)?;
    Ok(format!(
        "wrote {}\n\
         # in the config of the region that signs with it:\n\
         [oauth.signing_key]\nkid = \"{kid}\"\nfile = \"{}\"\n\
         # in every region's config (the cluster's trusted keys):\n\
         [[oauth.keys]]\nkid = \"{kid}\"\nx = \"{}\"\n",
        out.display(),
        out.display(),
        key.public_key_x()
    ))
}

async fn idp_sim(args: crate::idp_sim::Args) -> anyhow::Result<()> {
    let json = args.json;
    let report = crate::idp_sim::run(args).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    anyhow::ensure!(
        report.passed(),
        "acknowledged writes did not hold in every region"
    );
    Ok(())
}

async fn dns_query(
    server: std::net::SocketAddr,
    name: &str,
    qtype: &str,
    subnet: Option<ipnet::IpNet>,
    json: bool,
) -> anyhow::Result<()> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use std::str::FromStr;
    let qname = hickory_proto::rr::Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .map_err(|e| anyhow::anyhow!("invalid name {name:?}: {e}"))?;
    let qtype = hickory_proto::rr::RecordType::from_str(&qtype.to_ascii_uppercase())
        .map_err(|e| anyhow::anyhow!("unknown type {qtype:?}: {e}"))?;
    let m = crate::dns::client::query(
        server,
        &qname,
        qtype,
        subnet.map(|s| (s.network(), s.prefix_len())),
        std::time::Duration::from_secs(2),
    )
    .await?;
    let (addrs, ttl) = crate::dns::client::addresses(&m);
    let scope = m
        .edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => Some(s.scope_prefix()),
            _ => None,
        });
    let records: Vec<String> = m.answers.iter().map(|r| r.to_string()).collect();
    if json {
        let v = serde_json::json!({
            "rcode": format!("{:?}", m.metadata.response_code).to_ascii_uppercase(),
            "authoritative": m.metadata.authoritative, "truncated": m.metadata.truncation,
            "addrs": addrs, "ttl": ttl, "scope": scope, "answers": records,
            "authorities": m.authorities.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        println!(
            "{:?} aa={} answers={} scope={scope:?}",
            m.metadata.response_code,
            m.metadata.authoritative,
            records.len()
        );
        for r in records {
            println!("{r}");
        }
    }
    Ok(())
}

async fn conflicts(
    url: &str,
    token: &str,
    cacert: Option<&std::path::Path>,
    filter: crate::admin_client::ConflictFilter,
    json: bool,
) -> anyhow::Result<()> {
    let page = crate::admin_client::fetch_conflicts(url, token, &filter, cacert).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&page)?);
    } else {
        print!(
            "{}",
            crate::admin_client::conflicts_table(&page).map_err(anyhow::Error::msg)?
        );
    }
    Ok(())
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path, std::env::vars())?;
    let listeners = server::Listeners::bind(&config).await?;
    let running = server::start(config, listeners).await?;
    if let (Some(addr), Some(cfg)) = (running.addrs.dns, &running.state.config.dns) {
        println!(
            "geoscim: dns listening on {addr} (udp+tcp) for {}",
            cfg.service_name()
        );
    }
    println!("geoscim: http listening on {}", running.url());
    if let Some(addr) = running.addrs.quic {
        println!("geoscim: quic listening on {addr}");
    }
    if let Some(token) = &running.new_token {
        println!(
            "geoscim: created token for tenant {}: {token}",
            server::DEFAULT_TENANT
        );
        println!("geoscim: (shown once; only its hash is kept in the data dir)");
    }
    running.serve(server::shutdown_signal()).await?;
    Ok(())
}

fn certs(out: &std::path::Path, regions: &[String], force: bool) -> anyhow::Result<()> {
    use crate::replication::certs;
    // Check every name first, so a typo writes nothing.
    for region in regions {
        anyhow::ensure!(
            crate::ids::is_valid_name(region),
            "invalid region name {region:?}: use 1-63 characters of a-z, 0-9, '-' and '_'"
        );
    }
    let ca = if certs::ca_cert_path(out).exists() || certs::ca_key_path(out).exists() {
        let ca = certs::load_ca(out)?;
        println!("reusing CA {}", certs::ca_cert_path(out).display());
        ca
    } else {
        let ca = certs::generate_ca()?;
        certs::write_ca(out, &ca, false)?;
        println!("wrote CA {}", certs::ca_cert_path(out).display());
        println!(
            "wrote CA key {} (needed only to issue certificates)",
            certs::ca_key_path(out).display()
        );
        ca
    };
    for region in regions {
        let key = certs::region_key_path(out, region);
        if key.exists() && !force {
            println!("kept {} (exists; --force replaces it)", key.display());
            continue;
        }
        certs::write_identity(out, &ca.issue(region)?, force)?;
        println!(
            "wrote {} and {} for region {region}",
            certs::region_cert_path(out, region).display(),
            key.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::certs as c;

    #[test]
    fn token_create_takes_a_tenant_or_admin_but_not_both() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["geoscim", "token", "create", "--tenant", "acme"]).is_ok());
        assert!(matches!(
            parse(&["geoscim", "token", "create", "--admin"]).map(|c| c.command),
            Ok(Command::Token {
                command: TokenCommand::Create {
                    admin: true,
                    tenant: None
                }
            })
        ));
        assert!(parse(&["geoscim", "token", "create"]).is_err());
        assert!(parse(&["geoscim", "token", "create", "--admin", "--tenant", "a"]).is_err());
    }

    #[test]
    fn client_create_prints_the_secret_once_and_only_its_hash_as_config() {
        let out = client_command(ClientCommand::Create {
            tenant: "acme".into(),
        })
        .unwrap();
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .to_string()
        };
        let (id, secret) = (field("client_id: "), field("client_secret: "));
        let toml_part = &out[out.find("[[oauth.clients]]").unwrap()..];
        assert!(!toml_part.contains(&secret));
        let parsed: toml::Table = toml::from_str(toml_part).unwrap();
        let client = &parsed["oauth"]["clients"][0];
        assert_eq!(client["client_id"].as_str(), Some(id.as_str()));
        assert_eq!(client["tenant"].as_str(), Some("acme"));
        assert_eq!(
            client["secret_sha256"][0].as_str(),
            Some(crate::oauth::secret_hash(&secret).as_str())
        );
        assert!(client_command(ClientCommand::Create {
            tenant: "Not Valid".into()
        })
        .is_err());
        let rotated = client_command(ClientCommand::Rotate { client_id: id }).unwrap();
        assert!(rotated.contains("secret_sha256 = [\"<current hash>\", \""));
    }

    #[test]
    fn signing_key_create_writes_a_key_whose_config_lines_set_up_a_region() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("eu.jwt.key");
        let out = signing_key_create("eu-1", &file, false).unwrap();
        let toml_part = &out[out.find("[oauth.signing_key]").unwrap()..];
        let text = format!("region = \"eu\"\ndata_dir = \"d\"\n[oauth]\n{toml_part}");
        let config = Config::from_toml(&text, "t", Vec::new()).unwrap();
        assert!(crate::oauth::OAuth::load(config.oauth.as_ref().unwrap()).is_ok());
        assert!(
            signing_key_create("eu-1", &file, false).is_err(),
            "no overwrite"
        );
        assert!(signing_key_create("bad kid", &dir.path().join("x"), false).is_err());
    }

    #[test]
    fn certs_reuses_the_ca_and_keeps_existing_keys_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let regions = ["eu".to_string(), "us".to_string()];
        certs(&out, &regions, false).unwrap();
        let ca = std::fs::read_to_string(c::ca_cert_path(&out)).unwrap();
        let eu_key = std::fs::read_to_string(c::region_key_path(&out, "eu")).unwrap();

        // A second run adds a region with the same CA and leaves the others alone.
        certs(&out, &["eu".to_string(), "ap".to_string()], false).unwrap();
        assert_eq!(std::fs::read_to_string(c::ca_cert_path(&out)).unwrap(), ca);
        assert_eq!(c::load_identity(&out, "eu").unwrap().key_pem, eu_key);
        assert!(c::load_identity(&out, "ap").is_ok());

        // --force replaces the region key, still under the same CA.
        certs(&out, &["eu".to_string()], true).unwrap();
        assert_ne!(c::load_identity(&out, "eu").unwrap().key_pem, eu_key);
        assert_eq!(c::load_ca_cert(&out).unwrap(), ca);

        // A bad name writes nothing.
        assert!(certs(&out, &["ok".to_string(), "Bad".to_string()], false).is_err());
        assert!(!c::region_key_path(&out, "ok").exists());
    }
}
