"""The daemon: the Unix-socket JSON-RPC server, the service that schedules jobs on the rig and the
transfer workers, and the small client the command line uses to talk to it."""
