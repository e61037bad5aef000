"""Hounsfield units: reference values of tissues and the stored-value conventions of CT."""

#: Air.
HU_AIR = -1000.0
#: Aerated lung parenchyma (typical mean of a healthy lung at inspiration).
HU_LUNG = -850.0
#: Fat.
HU_FAT = -100.0
#: Water.
HU_WATER = 0.0
#: Soft tissue, muscle and unenhanced blood.
HU_SOFT_TISSUE = 40.0
#: Liver (unenhanced).
HU_LIVER = 55.0
#: Trabecular (spongy) bone.
HU_TRABECULAR_BONE = 250.0
#: Cortical bone.
HU_CORTICAL_BONE = 800.0
#: The usual RescaleIntercept of CT: stored value 0 is -1024 HU.
CT_RESCALE_INTERCEPT = -1024.0
#: Stored value many scanners put outside the circular field of view (PixelPaddingValue).
CT_PADDING_STORED = -2000
