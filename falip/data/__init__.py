"""The data layer: one loader module per dataset family (rec/, classification/), all reading real layouts."""
