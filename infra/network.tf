# A VPC for Direct VPC egress from Cloud Run, and private services access so
# that Cloud SQL and Memorystore get private addresses reachable from it.
# Nothing here has a public address.

resource "google_compute_network" "main" {
  # checkov:skip=CKV2_GCP_18:No VM runs in this network; Cloud Run egress and the private services need no firewall rule, and a VPC without rules denies all ingress (the implied rule).
  name                    = "${var.name_prefix}-vpc"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.enabled]
}

resource "google_compute_subnetwork" "run" {
  # checkov:skip=CKV_GCP_26:The subnet only carries Cloud Run egress to Cloud SQL and Memorystore, which log their own connections (log_connections, AUTH); flow logs would bill for every packet of it.
  name                     = "${var.name_prefix}-run"
  region                   = var.region
  network                  = google_compute_network.main.id
  ip_cidr_range            = var.run_subnet_cidr
  private_ip_google_access = true
}

resource "google_compute_global_address" "private_services" {
  name          = "${var.name_prefix}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = var.private_services_prefix_length
  network       = google_compute_network.main.id
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.main.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]

  # Removing the peering fails while Cloud SQL still uses it; let the
  # instance's deletion take it down instead.
  deletion_policy = "ABANDON"
}
