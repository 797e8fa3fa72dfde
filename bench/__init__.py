"""`make bench`: the engine measured against bare grpc.aio floors in the same run."""
