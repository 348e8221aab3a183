"""What workflows exchange with activities and the API: one module per process."""
