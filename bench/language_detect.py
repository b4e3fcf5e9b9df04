"""Language detection on short support messages: Deskmate's detector
(``bot.language.detect_language``: py3langid restricted to the shipped
languages, with its confidence floor) against langdetect where it is installed.

Two sets: ``TUNING`` chose the library and the floor; ``HELD_OUT`` was written
afterwards and is what the figures in bench/README.md report. A message
"abstains" when the detector says it cannot tell (the conversation's or the
tenant's language is then used): an abstention costs little, a wrong language
costs a reply the customer cannot read.

    .venv/bin/python bench/language_detect.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from bot.language import detect_language

TUNING: dict[str, list[str]] = {
    "en": ["Where is my order?", "How do I reset my password?", "Can I pay by invoice?",
           "My package never arrived", "Do you ship to Norway?", "I want a refund",
           "When are you open?", "The app keeps crashing"],
    "sv": ["Var är min beställning?", "Hur återställer jag mitt lösenord?",
           "Kan jag betala med faktura?", "Mitt paket kom aldrig fram", "Skickar ni till Norge?",
           "Jag vill ha pengarna tillbaka", "När har ni öppet?", "Appen kraschar hela tiden"],
    "de": ["Wo ist meine Bestellung?", "Wie setze ich mein Passwort zurück?",
           "Kann ich auf Rechnung zahlen?", "Mein Paket ist nie angekommen",
           "Liefert ihr nach Norwegen?", "Ich möchte mein Geld zurück", "Wann habt ihr geöffnet?",
           "Die App stürzt ständig ab"],
    "es": ["¿Dónde está mi pedido?", "¿Cómo restablezco mi contraseña?",
           "¿Puedo pagar con factura?", "Mi paquete nunca llegó", "¿Envían a Noruega?",
           "Quiero un reembolso", "¿Cuándo abren?", "La aplicación se cierra sola"],
    "fr": ["Où est ma commande ?", "Comment réinitialiser mon mot de passe ?",
           "Puis-je payer par facture ?", "Mon colis n'est jamais arrivé",
           "Livrez-vous en Norvège ?", "Je veux être remboursé", "Quand êtes-vous ouverts ?",
           "L'application plante tout le temps"],
    "zh": ["我的订单在哪里？", "怎么重置密码？", "可以用发票付款吗？", "我的包裹一直没到",
           "你们发货到挪威吗？", "我要退款", "你们几点开门？", "应用一直崩溃"],
    "": ["ok", "thanks", "hi", "Hej", "Danke", "merci", "👍", "1234", "refund",
         "order 12345 missing"],
}  # fmt: skip

HELD_OUT: dict[str, list[str]] = {
    "en": ["Is there a student discount?", "My card was charged twice", "Cancel my subscription",
           "How long does shipping take?", "The discount code does not work",
           "Can I change my delivery address?", "I got the wrong size",
           "Do you have this in stock?", "Where can I find my invoice?",
           "Please delete my account"],
    "sv": ["Finns det studentrabatt?", "Mitt kort drogs två gånger", "Säg upp mitt abonnemang",
           "Hur lång är leveranstiden?", "Rabattkoden fungerar inte",
           "Kan jag ändra leveransadressen?", "Jag fick fel storlek", "Har ni den i lager?",
           "Var hittar jag min faktura?", "Radera mitt konto, tack"],
    "de": ["Gibt es einen Studentenrabatt?", "Meine Karte wurde doppelt belastet",
           "Kündigt mein Abo", "Wie lange dauert der Versand?", "Der Rabattcode funktioniert nicht",
           "Kann ich die Lieferadresse ändern?", "Ich habe die falsche Größe bekommen",
           "Habt ihr das auf Lager?", "Wo finde ich meine Rechnung?", "Bitte löscht mein Konto"],
    "es": ["¿Hay descuento para estudiantes?", "Me cobraron dos veces en la tarjeta",
           "Cancelad mi suscripción", "¿Cuánto tarda el envío?",
           "El código de descuento no funciona",
           "¿Puedo cambiar la dirección de entrega?", "Me llegó la talla equivocada",
           "¿Lo tenéis en stock?", "¿Dónde encuentro mi factura?", "Borrad mi cuenta, por favor"],
    "fr": ["Y a-t-il une réduction étudiante ?", "Ma carte a été débitée deux fois",
           "Résiliez mon abonnement", "Combien de temps prend la livraison ?",
           "Le code promo ne marche pas", "Puis-je changer l'adresse de livraison ?",
           "J'ai reçu la mauvaise taille", "Est-ce que vous l'avez en stock ?",
           "Où trouver ma facture ?", "Supprimez mon compte, s'il vous plaît"],
    "zh": ["有学生折扣吗？", "我的卡被扣了两次钱", "取消我的订阅", "发货要多久？", "优惠码用不了",
           "可以改收货地址吗？", "尺码发错了", "这个有库存吗？", "我的发票在哪里找？",
           "请删除我的账号"],
    "": ["ok!", "yes", "nope", "thx", "tack!", "gracias", "👌", "#4711", "?", "ja"],
}  # fmt: skip


def measure(name: str, detect: Callable[[str], str | None], sets: dict[str, list[str]]) -> None:
    right = wrong = abstained = 0
    short_wrong = 0
    times: list[float] = []
    for expected, texts in sets.items():
        for text in texts:
            started = time.perf_counter()
            got = detect(text)
            times.append(time.perf_counter() - started)
            if got == (expected or None):
                right += 1
            elif got is None:
                abstained += 1
            else:
                wrong += 1
                short_wrong += expected == ""
                print(f"    {name}: {text!r} -> {got} (expected {expected or 'none'})")
    total = right + wrong + abstained
    print(
        f"  {name}: right {right}/{total}, wrong {wrong} ({short_wrong} of them too short to "
        f"tell), abstained {abstained}; median {statistics.median(times) * 1000:.3f} ms"
    )


def langdetect_detector() -> Callable[[str], str | None] | None:
    try:
        import langdetect
    except ImportError:
        return None
    langdetect.DetectorFactory.seed = 0

    def detect(text: str) -> str | None:
        try:
            return str(langdetect.detect(text))[:2]
        except langdetect.LangDetectException:
            return None

    return detect


def main() -> None:
    detect_language("warm up")
    other = langdetect_detector()
    if other is not None:
        other("warm up")
    for title, sets in (("tuning", TUNING), ("held-out", HELD_OUT)):
        print(f"{title} ({sum(map(len, sets.values()))} messages):")
        measure("deskmate (py3langid)", detect_language, sets)
        if other is not None:
            measure("langdetect", other, sets)


if __name__ == "__main__":
    main()
