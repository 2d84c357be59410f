//! The provider: no configuration of its own; it serves the resources and data sources.

use std::collections::HashMap;

use async_trait::async_trait;
use tf_provider::schema::Schema;
use tf_provider::value::ValueEmpty;
use tf_provider::{map, Diagnostics, DynamicDataSource, DynamicResource, Provider};

#[derive(Debug, Default, Clone, Copy)]
pub struct GeoscimProvider;

#[async_trait]
impl Provider for GeoscimProvider {
    type Config<'a> = ValueEmpty;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(crate::schema::schema(
            "geoscim: regions run from the geoscim binary on this machine, their certificates, tokens and faults.",
            vec![],
        ))
    }

    async fn validate<'a>(
        &self,
        _diags: &mut Diagnostics,
        _config: Self::Config<'a>,
    ) -> Option<()> {
        Some(())
    }

    async fn configure<'a>(
        &self,
        _diags: &mut Diagnostics,
        _terraform_version: String,
        _config: Self::Config<'a>,
    ) -> Option<()> {
        Some(())
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        Some(map! {
            "region" => crate::region::RegionResource,
            "cluster_certs" => crate::certs::CertsResource,
            "token" => crate::token::TokenResource,
            "fault" => crate::fault::FaultResource,
            "network" => crate::network::NetworkResource,
        })
    }

    fn get_data_sources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        Some(map! {
            "cluster" => crate::cluster::ClusterDataSource,
            "user" => crate::user::UserDataSource,
        })
    }
}
