"""`gac translate`: new Sentinel-1 scenes of any size -> seamless, georeferenced Sentinel-2 L2A COGs."""
