output "http_urls" {
  description = "SCIM base URL of every running region."
  value       = { for name, m in module.region : name => "${m.http_url}/scim/v2" }
}

output "dns_servers" {
  description = "The responders (dig @ip -p 5300 scim.geoscim.test)."
  value       = local.dns_servers
}

output "token" {
  description = "Bearer token for tenant default (terraform output -raw token)."
  value       = geoscim_token.tenant.token
  sensitive   = true
}

output "admin_token" {
  description = "Admin token for /admin/v1 and geoscim conflicts."
  value       = geoscim_token.admin.token
  sensitive   = true
}

output "cluster" {
  description = "Per region: up, status, lag, digest, conflicts; DNS answers per client network; converged."
  value = {
    regions   = data.geoscim_cluster.now.regions
    answers   = data.geoscim_cluster.now.answers
    up        = data.geoscim_cluster.now.up
    converged = data.geoscim_cluster.now.converged
    waited_ms = data.geoscim_cluster.now.waited_ms
  }
}
