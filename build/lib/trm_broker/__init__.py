"""trm-broker: message exchange for the Transnational Referral Mechanism."""

__version__ = "0.1.0"
