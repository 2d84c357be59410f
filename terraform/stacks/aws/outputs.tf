output "scim_endpoints" {
  description = "Per region: the load balancer's name for SCIM (https://<name>/scim/v2)."
  value = {
    eu = module.eu.dns_name
    us = module.us.dns_name
    ap = module.ap.dns_name
  }
}
