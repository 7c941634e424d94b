"""The simulators: everything ``--simulate`` and ``rig.model: simulated`` run instead of hardware
and the OpenScan Cloud. Nothing in the product path imports this package except where the rig
picks its simulated parts and where the commands start the local cloud."""
