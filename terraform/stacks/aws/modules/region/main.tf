# One geoscim region on AWS: a VPC with public subnets, one instance running `geoscim serve`
# (region file rendered below, secrets fetched at boot), and a network load balancer whose
# listeners each open one port: TLS 443 -> HTTP 8080 (SCIM), UDP 7100 (QUIC replication), UDP
# and TCP 53 -> 5300 (the DNS responder). Target health is /health on 8080, the same check the
# regions' own probers use.

terraform {
  required_providers {
    aws = {
      source = "hashicorp/aws"
    }
  }
}

variable "name" {
  type = string
}

variable "zone" {
  type = string
}

variable "regions" {
  type = map(object({ lat = number, lon = number, serves = list(string) }))
}

variable "peer_cidrs" {
  type = list(string)
}

variable "idp_cidrs" {
  type = list(string)
}

variable "image_id" {
  type = string
}

variable "instance_type" {
  type = string
}

variable "certificate" {
  type = string
}

variable "secrets_arn" {
  type = string
}

variable "vpc_cidr" {
  type    = string
  default = "10.40.0.0/16"
}

data "aws_availability_zones" "this" {
  state = "available"
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_hostnames = true
  tags                 = { Name = "geoscim-${var.name}" }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
}

resource "aws_subnet" "public" {
  count                   = 2
  vpc_id                  = aws_vpc.this.id
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, count.index)
  availability_zone       = data.aws_availability_zones.this.names[count.index]
  map_public_ip_on_launch = false
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
}

resource "aws_route_table_association" "public" {
  count          = 2
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nlb" {
  count  = 2
  domain = "vpc"
}

# The instance takes traffic only from inside the VPC (the NLB forwards with the client's
# address preserved, so the rules below name the clients each listener is for).
resource "aws_security_group" "region" {
  name   = "geoscim-${var.name}"
  vpc_id = aws_vpc.this.id

  ingress {
    description = "SCIM from the identity providers (TLS ends at the NLB)"
    protocol    = "tcp"
    from_port   = 8080
    to_port     = 8080
    cidr_blocks = concat(var.idp_cidrs, [var.vpc_cidr])
  }
  ingress {
    description = "QUIC replication from the other regions only"
    protocol    = "udp"
    from_port   = 7100
    to_port     = 7100
    cidr_blocks = var.peer_cidrs
  }
  ingress {
    description = "DNS over UDP from any resolver"
    protocol    = "udp"
    from_port   = 5300
    to_port     = 5300
    cidr_blocks = ["0.0.0.0/0"]
  }
  ingress {
    description = "DNS over TCP (truncated answers) from any resolver"
    protocol    = "tcp"
    from_port   = 5300
    to_port     = 5300
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    description = "QUIC to the other regions, health probes of every region"
    protocol    = "-1"
    from_port   = 0
    to_port     = 0
    cidr_blocks = ["0.0.0.0/0"]
  }
}

locals {
  region_file = templatefile("${path.module}/region.toml.tftpl", {
    name    = var.name
    zone    = var.zone
    regions = var.regions
  })
}

resource "aws_instance" "region" {
  ami                    = var.image_id
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.public[0].id
  vpc_security_group_ids = [aws_security_group.region.id]
  user_data = templatefile("${path.module}/boot.sh.tftpl", {
    region_file = local.region_file
    secrets_arn = var.secrets_arn
  })
  root_block_device {
    volume_size = 50
    volume_type = "gp3"
    encrypted   = true
  }
  tags = { Name = "geoscim-${var.name}" }
}

resource "aws_lb" "this" {
  name               = "geoscim-${var.name}"
  load_balancer_type = "network"
  dynamic "subnet_mapping" {
    for_each = aws_subnet.public
    content {
      subnet_id     = subnet_mapping.value.id
      allocation_id = aws_eip.nlb[subnet_mapping.key].id
    }
  }
}

resource "aws_lb_target_group" "scim" {
  name     = "geoscim-${var.name}-scim"
  port     = 8080
  protocol = "TCP"
  vpc_id   = aws_vpc.this.id
  health_check {
    protocol            = "HTTP"
    port                = "8080"
    path                = "/health"
    interval            = 10
    healthy_threshold   = 3
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group" "quic" {
  name     = "geoscim-${var.name}-quic"
  port     = 7100
  protocol = "UDP"
  vpc_id   = aws_vpc.this.id
  health_check {
    protocol = "HTTP"
    port     = "8080"
    path     = "/health"
  }
}

resource "aws_lb_target_group" "dns" {
  name     = "geoscim-${var.name}-dns"
  port     = 5300
  protocol = "TCP_UDP"
  vpc_id   = aws_vpc.this.id
  health_check {
    protocol = "HTTP"
    port     = "8080"
    path     = "/health"
  }
}

resource "aws_lb_target_group_attachment" "this" {
  for_each = {
    scim = aws_lb_target_group.scim.arn
    quic = aws_lb_target_group.quic.arn
    dns  = aws_lb_target_group.dns.arn
  }
  target_group_arn = each.value
  target_id        = aws_instance.region.id
}

resource "aws_lb_listener" "scim" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "TLS"
  certificate_arn   = var.certificate
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.scim.arn
  }
}

resource "aws_lb_listener" "quic" {
  load_balancer_arn = aws_lb.this.arn
  port              = 7100
  protocol          = "UDP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.quic.arn
  }
}

resource "aws_lb_listener" "dns" {
  load_balancer_arn = aws_lb.this.arn
  port              = 53
  protocol          = "TCP_UDP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.dns.arn
  }
}

output "public_ips" {
  value = aws_eip.nlb[*].public_ip
}

output "dns_name" {
  value = aws_lb.this.dns_name
}
