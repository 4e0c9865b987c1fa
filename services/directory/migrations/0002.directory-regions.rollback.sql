DELETE FROM directory.regions;
