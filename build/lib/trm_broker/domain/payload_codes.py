"""The codes sealed payloads use (`trm_broker.domain.payloads`), with where each comes from.

Where a shared vocabulary exists a code is the snake_case of its name there, so a payload
maps onto the case systems NGOs and NRMs already use:

- HTCDS: IOM's Human Trafficking Case Data Standard v2 (github.com/UNMigration/HTCDS,
  "HTCDS Field Reference.md"); fields are named as there, e.g. ``vic_MethodsOfControl``.
- CTDC: the Counter Trafficking Data Collaborative codebook (v6, 2017), whose flags
  (``isForcedLabour``, ``meansOfControlDebtBondage``, ...) carry the same values.
- CETS 197: the Council of Europe Convention on Action against Trafficking in Human Beings.

An enumeration whose docstring names no source is ours. Adding a code is a compatible
change; removing or renaming one needs a new payload version.
"""

from __future__ import annotations

from enum import StrEnum


class FormOfExploitation(StrEnum):
    """CTDC ``is*`` flags (HTCDS ``vic_TypeOfExploitation``); ``isSexAndLabour`` is both listed."""

    FORCED_LABOUR = "forced_labour"  # isForcedLabour
    SEXUAL_EXPLOITATION = "sexual_exploitation"  # isSexualExploit
    FORCED_MARRIAGE = "forced_marriage"  # isForcedMarriage
    FORCED_MILITARY = "forced_military"  # isForcedMilitary
    ORGAN_REMOVAL = "organ_removal"  # isOrganRemoval
    SLAVERY_AND_PRACTICES = "slavery_and_practices"  # isSlaveryAndPractices
    OTHER = "other"  # isOtherExploit


class LabourExploitationType(StrEnum):
    """HTCDS ``vic_TypeOfLabourExploitation``."""

    AGRICULTURE = "agriculture"
    AQUAFARMING = "aquafarming"
    BEGGING = "begging"
    CONSTRUCTION = "construction"
    DOMESTIC_WORK = "domestic_work"
    HOSPITALITY = "hospitality"
    ILLICIT_ACTIVITIES = "illicit_activities"
    MANUFACTURING = "manufacturing"
    MINING_OR_DRILLING = "mining_or_drilling"
    PEDDLING = "peddling"
    TRANSPORTATION = "transportation"
    OTHER = "other"


class SexualExploitationType(StrEnum):
    """HTCDS ``vic_TypeOfSexExploitation``."""

    PROSTITUTION = "prostitution"
    PORNOGRAPHY = "pornography"
    REMOTE_INTERACTIVE_SERVICES = "remote_interactive_services"
    PRIVATE_SEXUAL_SERVICES = "private_sexual_services"


class MeansOfControl(StrEnum):
    """HTCDS ``vic_MethodsOfControl``, the CTDC ``meansOfControl*`` flags."""

    DEBT_BONDAGE = "debt_bondage"
    TAKES_EARNINGS = "takes_earnings"
    RESTRICTS_FINANCIAL_ACCESS = "restricts_financial_access"
    THREATS = "threats"
    PSYCHOLOGICAL_ABUSE = "psychological_abuse"
    PHYSICAL_ABUSE = "physical_abuse"
    SEXUAL_ABUSE = "sexual_abuse"
    FALSE_PROMISES = "false_promises"
    PSYCHOACTIVE_SUBSTANCES = "psychoactive_substances"
    RESTRICTS_MOVEMENT = "restricts_movement"
    RESTRICTS_MEDICAL_CARE = "restricts_medical_care"
    EXCESSIVE_WORKING_HOURS = "excessive_working_hours"
    USES_CHILDREN = "uses_children"
    THREAT_OF_LAW_ENFORCEMENT = "threat_of_law_enforcement"
    WITHHOLDS_NECESSITIES = "withholds_necessities"
    WITHHOLDS_DOCUMENTS = "withholds_documents"
    OTHER = "other"


class TraffickingStatus(StrEnum):
    """HTCDS ``vic_TraffickingStatus`` (its third value, not a victim, is never referred)."""

    POSSIBLE_VICTIM = "possible_victim_of_trafficking"
    ACTUAL_VICTIM = "actual_victim_of_trafficking"


class Gender(StrEnum):
    """HTCDS ``prs_Gender``."""

    MALE = "male"
    FEMALE = "female"
    TRANSGENDER_NON_CONFORMING = "transgender_non_conforming"
    UNKNOWN = "unknown"


class OrganisationType(StrEnum):
    """HTCDS ``org_Type``; the last two are ours (IOM and similar bodies assess too)."""

    NGO = "ngo"
    LAW_ENFORCEMENT = "law_enforcement"
    HEALTH_SERVICE_ORGANISATION = "health_service_organisation"
    CENTRAL_GOVERNMENT_ORGANISATION = "central_government_organisation"
    LOCAL_GOVERNMENT_ORGANISATION = "local_government_organisation"
    IMMIGRATION_SERVICE = "immigration_service"
    LEGAL_SERVICE = "legal_service"
    CORPORATE_BUSINESS = "corporate_business"
    INTERNATIONAL_ORGANISATION = "international_organisation"
    OTHER = "other"


class Assistance(StrEnum):
    """Assistance needed or received. HTCDS has no code list for it; these name what CETS 197
    Art. 12 and the Palermo Protocol Art. 6(3) require States to offer."""

    SHELTER = "shelter"  # appropriate and secure accommodation, Art. 12(1)(a)
    MATERIAL_ASSISTANCE = "material_assistance"  # Art. 12(1)(a)
    PSYCHOLOGICAL_SUPPORT = "psychological_support"  # Art. 12(1)(a)
    MEDICAL_CHECK = "medical_check"  # Art. 12(1)(b)
    MEDICAL_TREATMENT = "medical_treatment"  # Art. 12(1)(b)
    INTERPRETATION = "interpretation"  # Art. 12(1)(c)
    LEGAL_COUNSELLING = "legal_counselling"  # Art. 12(1)(d)
    LEGAL_REPRESENTATION = "legal_representation"  # Art. 12(1)(e)
    EDUCATION = "education"  # Art. 12(1)(f); Palermo Art. 6(3)(d)
    VOCATIONAL_TRAINING = "vocational_training"  # Palermo Art. 6(3)(d)
    EMPLOYMENT_SUPPORT = "employment_support"  # Palermo Art. 6(3)(d)
    FINANCIAL_SUPPORT = "financial_support"
    SAFETY_AND_PROTECTION = "safety_and_protection"  # Art. 12(2)
    IDENTITY_DOCUMENTS = "identity_documents"  # Art. 16(4)
    FAMILY_TRACING = "family_tracing"  # Art. 10(4)
    GUARDIANSHIP = "guardianship"  # Art. 10(4)
    OTHER = "other"


class DeclineReason(StrEnum):
    """Why a referral is declined; nationality or residence is verified under CETS 197 16(3)."""

    IDENTITY_NOT_CONFIRMED = "identity_not_confirmed"
    NATIONALITY_OR_RESIDENCE_NOT_CONFIRMED = "nationality_or_residence_not_confirmed"
    NO_SERVICE_CAPACITY = "no_service_capacity"
    ALREADY_REFERRED = "already_referred"
    OTHER = "other"


class ProtectiveFactor(StrEnum):
    """HTCDS v2 ("Assessment and Planning") groups risk and protection by individual,
    household and community but fixes no codes; these are ours, in that grouping."""

    PERSONAL_RESILIENCE = "personal_resilience"
    EDUCATION_OR_SKILLS = "education_or_skills"
    INCOME_OR_EMPLOYMENT = "income_or_employment"
    VALID_DOCUMENTS = "valid_documents"
    SUPPORTIVE_FAMILY = "supportive_family"
    SAFE_ACCOMMODATION = "safe_accommodation"
    COMMUNITY_SUPPORT = "community_support"
    ACCESS_TO_SERVICES = "access_to_services"
    EFFECTIVE_PROTECTION = "effective_protection"
    OTHER = "other"


class Recommendation(StrEnum):
    RETURN = "return"
    RETURN_WITH_CONDITIONS = "return_with_conditions"
    REMAIN_IN_COUNTRY_OF_EXPLOITATION = "remain_in_country_of_exploitation"
    THIRD_COUNTRY = "third_country"
    REASSESS_LATER = "reassess_later"


class TransportMode(StrEnum):
    AIR = "air"
    ROAD = "road"
    RAIL = "rail"
    SEA = "sea"


class DocumentStatus(StrEnum):
    AVAILABLE = "available"
    REQUESTED = "requested"
    ISSUED = "issued"
    MISSING = "missing"


class TravelDocumentKind(StrEnum):
    PASSPORT = "passport"
    EMERGENCY_TRAVEL_DOCUMENT = "emergency_travel_document"  # CETS 197 Art. 16(4)
    IDENTITY_CARD = "identity_card"
    OTHER = "other"


class EscortRole(StrEnum):
    SOCIAL_WORKER = "social_worker"
    MEDICAL_STAFF = "medical_staff"
    LAW_ENFORCEMENT = "law_enforcement"
    GUARDIAN = "guardian"
    FAMILY_MEMBER = "family_member"
    OTHER = "other"


class FamilyTracingOutcome(StrEnum):
    NOT_REQUESTED = "not_requested"
    IN_PROGRESS = "in_progress"
    FOUND = "found"
    FOUND_NOT_SUITABLE = "found_not_suitable"
    NOT_FOUND = "not_found"


class BestInterestsOutcome(StrEnum):
    RETURN_IN_BEST_INTERESTS = "return_in_best_interests"
    RETURN_NOT_IN_BEST_INTERESTS = "return_not_in_best_interests"


class NotReceivedReason(StrEnum):
    DID_NOT_TRAVEL = "did_not_travel"
    TRAVEL_DISRUPTED = "travel_disrupted"
    NOT_MET_ON_ARRIVAL = "not_met_on_arrival"
    DECLINED_ASSISTANCE = "declined_assistance"
    WHEREABOUTS_UNKNOWN = "whereabouts_unknown"
    OTHER = "other"


class CannotReceiveReason(StrEnum):
    """Why a receiving organisation cannot receive the person as planned."""

    NO_CAPACITY = "no_capacity"
    NEEDS_NOT_MET = "needs_not_met"
    OUTSIDE_SERVICE_AREA = "outside_service_area"
    SAFETY_CONCERNS = "safety_concerns"
    DATE_NOT_POSSIBLE = "date_not_possible"
    OTHER = "other"


class WellbeingRating(StrEnum):
    GOOD = "good"
    FAIR = "fair"
    POOR = "poor"


class MonitoringContact(StrEnum):
    HOME_VISIT = "home_visit"
    OFFICE_VISIT = "office_visit"
    PHONE = "phone"
    VIDEO = "video"
    NO_CONTACT = "no_contact"
