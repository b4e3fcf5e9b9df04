"""The company-fact patterns in Swedish, German, Spanish, French and Chinese.

The same subjects as the English patterns of ``bot.knowledge.company_facts``
(hours, prices, plans, refunds, orders, accounts, payments, policies,
contact), each asked of the company or about the customer's own dealings
with it, and the same exceptions: a request to write, translate or explain
something, or a question about a concept in general. Swedish and German
words are matched as the start of a compound ("öppettiderna",
"Lieferzeiten"); Chinese has no spaces, so a subject word anywhere counts,
and a Chinese message is short when it has at most ``TERSE_HAN`` characters.

A message is read with the patterns of its detected language
(``bot.language.detect_language``); one too short to tell is tried with
every language's. An English message gets none of these: "help me make a
plan" is not a Spanish question about a subscription.
"""

from __future__ import annotations

import re

from bot.language import detect_language

_FLAGS = re.IGNORECASE

# Subject → the start of each word (or, in Chinese, the word) that names it.
_WORDS: dict[str, dict[str, str]] = {
    "sv": {
        "hours": r"öppettid|öppet|öppnar|stänger|stängt",
        "prices": r"pris|kostar|kostnad|avgift|rabatt|moms|erbjudande",
        "plans": r"abonnemang|prenumeration|medlemskap|uppgradera|nedgradera",
        "refunds": r"återbetal|pengarna tillbaka|retur|reklamation|garanti|ångerrätt",
        "orders": r"beställ|paket|leverans|levere|frakt|skicka|spåra|spårning|hämta ut",
        "accounts": r"konto|lösenord|logga in|inloggning|användarnamn|verifieringskod|utelåst",
        "payments": r"faktur|betal|kortet|kvitto|swish|klarna|valuta",
        "policies": r"villkor|integritet|personuppgift|gdpr|säga upp|uppsägning|avsluta",
        "contact": r"kontakta|telefonnummer|mejl|e-post|kundtjänst|kundservice|butik|adress",
    },
    "de": {
        "hours": r"öffnungszeit|geöffnet|offen|schließ|geschlossen",
        "prices": r"preis|kosten|kostet|gebühr|rabatt|gutschein|mwst|angebot",
        "plans": r"abo\b|abonnement|mitgliedschaft|tarif|upgrade|downgrade",
        "refunds": r"rückerstatt|geld zurück|rücksend|zurückgeb|umtausch|garantie|gewährleist"
        r"|widerruf",
        "orders": r"bestell|paket|liefer|versand|versend|sendungsverfolgung|vorrätig|abholen",
        "accounts": r"konto|passwort|kennwort|anmelden|einloggen|login|benutzername|gesperrt",
        "payments": r"rechnung|bezahl|zahlung|kreditkarte|karte\b|quittung|paypal|währung"
        r"|abbuchung",
        "policies": r"agb\b|bedingungen|datenschutz|meine daten|dsgvo|kündig|stornier",
        "contact": r"kontakt|telefonnummer|e-mail|kundenservice|kundendienst|filiale|adresse",
    },
    "es": {
        "hours": r"horario|abiert|abren|cierran|cerrad",
        "prices": r"precio|cuesta|cuánto|coste|costo|tarifa|descuento|cupón|iva\b|oferta",
        "plans": r"suscripci|membresía|plan\b",
        "refunds": r"reembols|devolver|devoluci|cambiar|garantía",
        "orders": r"pedido|paquete|envío|enviar|entrega|lleg|seguimiento|recoger",
        "accounts": r"cuenta|contraseña|iniciar sesión|usuario|bloquead",
        "payments": r"factura|pagar|pago|tarjeta|recibo|paypal|moneda|cobr",
        "policies": r"política|términos|condiciones|privacidad|mis datos|rgpd|cancel|darme de baja",
        "contact": r"contact|teléfono|correo|atención al cliente|tienda|oficina|dirección",
    },
    "fr": {
        "hours": r"horaire|ouvert|ouvrez|fermé|fermez",
        "prices": r"prix|coûte|combien|coût|tarif|frais|réduction|remise|code promo|tva\b|offre",
        "plans": r"abonnement|adhésion|forfait|formule",
        "refunds": r"rembours|retour|retourner|échange|garantie|rétractation",
        "orders": r"commande|colis|livr|expédi|suivi|stock|retirer",
        "accounts": r"compte|mot de passe|connexion|connecter|identifiant|bloqué",
        "payments": r"factur|payer|paiement|carte\b|reçu|paypal|devise|prélèvement|débité",
        "policies": r"politique|conditions|confidentialité|mes données|rgpd|annul|résili",
        "contact": r"contact|téléphone|e-mail|courriel|service client|magasin|boutique|adresse",
    },
    "zh": {
        "hours": r"营业时间|几点开门|几点关门|开门|关门|营业",
        "prices": r"价格|多少钱|费用|收费|折扣|优惠|增值税",
        "plans": r"订阅|会员|套餐|升级|降级",
        "refunds": r"退款|退货|退钱|换货|保修|质保",
        "orders": r"订单|下单|包裹|快递|发货|送货|配送|物流|到货|库存|自提",
        "accounts": r"账户|账号|密码|登录|登陆|注册|用户名|验证码",
        "payments": r"发票|付款|支付|信用卡|银行卡|收据|扣款",
        "policies": r"政策|条款|隐私|个人数据|个人信息|取消|退订",
        "contact": r"联系|电话|邮箱|客服|门店|办公室|地址",
    },
}

# Asked of the company or about the customer's own dealings with it.
_ADDRESSED: dict[str, str] = {
    "sv": r"\b(?:ni|er|ert|era|du|din|ditt|dina|jag|mig|min|mitt|mina|vi|vår|vårt|oss)\b",
    "de": r"\b(?:sie|ihr|ihre|ihren|ihrem|euch|euer|eure|du|dein|deine|ich|mich|mir|mein|meine"
    r"|meinen|meinem|wir|uns|unser)\b",
    "es": r"\b(?:usted|ustedes|vosotros|tú|tu|tus|su|sus|yo|me|mi|mis|nosotros|nuestro|nuestra"
    r"|tienen|tenéis|puedo|pueden|podéis)\b",
    "fr": r"\b(?:vous|votre|vos|tu|ton|ta|tes|je|moi|me|mon|ma|mes|nous|notre|nos)\b|\bj'",
    "zh": r"你们|您|我|贵公司|你",
}

# Requests to write, translate or explain something, or questions about a concept.
_GENERAL: dict[str, str] = {
    "sv": r"^\W*(?:kan du |snälla )?(?:skriv|översätt|förklara|sammanfatta)|\bvad är en?\b"
    r"|\bvad betyder\b|\bhur fungerar\b",
    "de": r"^\W*(?:kannst du |bitte )?(?:schreib|übersetz|erklär|fass)|\bwas ist (?:ein|eine)\b"
    r"|\bwas bedeutet\b|\bwie funktionier",
    "es": r"^\W*(?:puedes |por favor )?(?:escrib|tradu|explica|resum)|\bqué es (?:un|una)\b"
    r"|\bqué significa\b|\bcómo funciona",
    "fr": r"^\W*(?:peux-tu |pouvez-vous |merci de )?(?:écri|tradui|expliqu|résum)"
    r"|\bqu'est-ce qu'(?:un|une)\b|\bque signifie\b|\bcomment fonctionne",
    "zh": r"^\W*(?:请|帮我)?(?:写|翻译|解释|总结)|什么是|是什么意思|怎么运作|如何运作",
}

# A message this short with a company subject is a support chat's shorthand.
TERSE_WORDS = 5
TERSE_HAN = 8
_HAN = re.compile(r"[\u3400-\u9fff]")


def _compile(language: str, words: str) -> re.Pattern[str]:
    # Chinese words stand anywhere; the others start a word.
    return re.compile(words if language == "zh" else rf"\b(?:{words})", _FLAGS)


_SUBJECTS: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    language: tuple((name, _compile(language, words)) for name, words in subjects.items())
    for language, subjects in _WORDS.items()
}
_ADDRESSED_RE = {language: re.compile(p, _FLAGS) for language, p in _ADDRESSED.items()}
_GENERAL_RE = {language: re.compile(p, _FLAGS) for language, p in _GENERAL.items()}


def _terse(text: str, language: str) -> bool:
    if language == "zh":
        return len(_HAN.findall(text)) <= TERSE_HAN
    return len(text.split()) <= TERSE_WORDS


def subject_in_other_languages(text: str) -> str | None:
    """The company subject ``text`` asks about by the patterns of Swedish,
    German, Spanish, French or Chinese, or None."""
    detected = detect_language(text)
    if detected == "en":
        return None
    for language, subjects in _SUBJECTS.items():
        if detected is not None and language != detected:
            continue
        if _GENERAL_RE[language].search(text):
            return None
        subject = next((name for name, pattern in subjects if pattern.search(text)), None)
        if subject is None:
            continue
        if _ADDRESSED_RE[language].search(text) or _terse(text, language):
            return subject
    return None
