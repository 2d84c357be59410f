# A sketch of a real multi-region geoscim deployment on AWS: one region per AWS region, each an
# instance behind a network load balancer (TLS for SCIM, UDP for QUIC replication, UDP+TCP for
# the DNS responder), the zone delegated to the regions' responders, health checks on /health,
# and security groups that open only what each listener needs.
#
# Not applied anywhere (and not in CI): the AWS provider cannot be installed here, so it is only
# kept `terraform fmt -check` clean. See README.md beside this file.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  alias  = "eu"
  region = "eu-central-1"
}

provider "aws" {
  alias  = "us"
  region = "us-east-1"
}

provider "aws" {
  alias  = "ap"
  region = "ap-southeast-1"
}

locals {
  zone = var.zone
  # Every region's public facts, given to every region: its peers and its DNS routing table.
  regions = {
    eu = { lat = 50.11, lon = 8.68, serves = var.serves["eu"] }
    us = { lat = 38.95, lon = -77.45, serves = var.serves["us"] }
    ap = { lat = 1.35, lon = 103.82, serves = var.serves["ap"] }
  }
}

module "eu" {
  source    = "./modules/region"
  providers = { aws = aws.eu }

  name          = "eu"
  zone          = local.zone
  regions       = local.regions
  peer_cidrs    = var.peer_cidrs
  idp_cidrs     = var.idp_cidrs
  image_id      = var.image_ids["eu"]
  instance_type = var.instance_type
  certificate   = var.certificate_arns["eu"]
  secrets_arn   = var.secrets_arns["eu"]
}

module "us" {
  source    = "./modules/region"
  providers = { aws = aws.us }

  name          = "us"
  zone          = local.zone
  regions       = local.regions
  peer_cidrs    = var.peer_cidrs
  idp_cidrs     = var.idp_cidrs
  image_id      = var.image_ids["us"]
  instance_type = var.instance_type
  certificate   = var.certificate_arns["us"]
  secrets_arn   = var.secrets_arns["us"]
}

module "ap" {
  source    = "./modules/region"
  providers = { aws = aws.ap }

  name          = "ap"
  zone          = local.zone
  regions       = local.regions
  peer_cidrs    = var.peer_cidrs
  idp_cidrs     = var.idp_cidrs
  image_id      = var.image_ids["ap"]
  instance_type = var.instance_type
  certificate   = var.certificate_arns["ap"]
  secrets_arn   = var.secrets_arns["ap"]
}

# Delegation: the parent zone hands `zone` to the three responders (ns-<region>.<zone>, with
# glue), so resolvers ask geoscim itself and get the nearest healthy region.
data "aws_route53_zone" "parent" {
  provider = aws.us
  name     = var.parent_zone
}

resource "aws_route53_record" "delegation" {
  provider = aws.us
  zone_id  = data.aws_route53_zone.parent.zone_id
  name     = local.zone
  type     = "NS"
  ttl      = 300
  records  = [for r in ["eu", "us", "ap"] : "ns-${r}.${local.zone}"]
}

resource "aws_route53_record" "glue" {
  provider = aws.us
  for_each = {
    eu = module.eu.public_ips
    us = module.us.public_ips
    ap = module.ap.public_ips
  }
  zone_id = data.aws_route53_zone.parent.zone_id
  name    = "ns-${each.key}.${local.zone}"
  type    = "A"
  ttl     = 300
  records = each.value
}
