-- depends: 0001.directory-schema

-- The 18 ARS regions (13 metropolitan including Corse, 5 DROM), by INSEE region code. Reference data, not
-- demo data: every deployment has them. Must agree with services.directory.demo.REGIONS (a test compares).
INSERT INTO directory.regions (code, display_name, time_zone, overseas) VALUES
    ('01', 'Guadeloupe', 'America/Guadeloupe', true),
    ('02', 'Martinique', 'America/Martinique', true),
    ('03', 'Guyane', 'America/Cayenne', true),
    ('04', 'La Réunion', 'Indian/Reunion', true),
    ('06', 'Mayotte', 'Indian/Mayotte', true),
    ('11', 'Île-de-France', 'Europe/Paris', false),
    ('24', 'Centre-Val de Loire', 'Europe/Paris', false),
    ('27', 'Bourgogne-Franche-Comté', 'Europe/Paris', false),
    ('28', 'Normandie', 'Europe/Paris', false),
    ('32', 'Hauts-de-France', 'Europe/Paris', false),
    ('44', 'Grand Est', 'Europe/Paris', false),
    ('52', 'Pays de la Loire', 'Europe/Paris', false),
    ('53', 'Bretagne', 'Europe/Paris', false),
    ('75', 'Nouvelle-Aquitaine', 'Europe/Paris', false),
    ('76', 'Occitanie', 'Europe/Paris', false),
    ('84', 'Auvergne-Rhône-Alpes', 'Europe/Paris', false),
    ('93', 'Provence-Alpes-Côte d''Azur', 'Europe/Paris', false),
    ('94', 'Corse', 'Europe/Paris', false);
