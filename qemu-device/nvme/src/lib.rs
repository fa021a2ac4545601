//! vfio-user NVMe controller (see issue 3).
