"""Word lists of the official scene-graph parser, as data.

The official text pipeline decides what a noun chunk is (an object, a scene, or nothing) by exact
membership of spaCy lemmas in these lists, so they decide the main object and whether "This is an
object . " is prepended: any change here changes the text the model sees. The lists are the names
the authors' parser loads (ScanNet's raw category names, the 3RScan-mapped names and a few extra
object and scene nouns); they are kept here as plain data so the rules can be reproduced exactly.
"""

from __future__ import annotations

__all__ = ["OBJECT_CLASSES", "OBJECT_NOUNS", "SCENE_NOUNS", "PRONOUN_LEMMAS", "SCANNET18_CLASSES"]


def _words(*chunks: str) -> frozenset[str]:
    """Entries are joined by '|' (no entry contains one) so the lists stay compact."""
    return frozenset("".join(chunks).split("|"))


# Object class names matched whole against a chunk's lemma or its compound lemma.
OBJECT_CLASSES: frozenset[str] = _words(
    'air conditioner|air mattress|airplane|alarm|alarm clock|apron|aquarium|armchair|armoire|armor|'
    'audio system|baby bed|baby changing table|baby changing unit|baby gym|baby mobile|baby seat|baby toys|'
    'backpack|bag|bag of coffee beans|balcony|balcony door|ball|banana holder|bananas|banister|banner|bar|'
    'bar stool|barrel|barricade|barrier|barstool|baseball cap|basin|basket|bath cabinet|bath counter|'
    'bath products|bath rack|bath robe|bath walls|bathrobe|bathroom cabinet|bathroom counter|bathroom items|'
    'bathroom stall|bathroom stall door|bathroom vanity|bathtub|battery disposal jar|bbq|beachball|beam|'
    'bean bag|beanbag|beanbag chair|bear|beautician|bed|bed table|bedside table|beer bottles|bench|'
    'beverage crate|bicycle|bidet|bike|bike lock|bike pump|bin|binder|binders|blackboard|blackboard eraser|'
    'blanket|blinds|block|board|boards|boat|body loofah|boiler|book|book rack|books|bookshelf|bookshelves|'
    'boots|bottle|bottles|bowl|box|boxes|boxes of paper|bread|breadboard|breakfast bar|briefcase|brochure|'
    'broom|brush|bucket|buddha|buggy|bulletin board|bunk bed|bycicle|cabinet|cabinet door|cabinet doors|'
    'cabinets|cable|cable rack|calendar|can|candle|candles|candlestick|canopy|cap|car|card|cardboard|carpet|'
    'carriage|carseat|cart|carton|case|case of water bottles|cat litter box|cd case|cd cases|ceiling|'
    'ceiling /other room|ceiling fan|ceiling lamp|ceiling light|chain|chair|chairs|chandelier|'
    "changing station|changing table|chest|child chair|child clothes|children's table|cleaning agent|"
    'cleaning brush|cleanser|clip|clock|closet|closet ceiling|closet door|closet doorframe|closet doors|'
    'closet floor|closet rod|closet shelf|closet wall|closet walls|closet wardrobe|cloth|clothes|'
    'clothes dryer|clothes dryers|clothes hanger|clothes hangers|clothes rack|clothing|clothing rack|clutter|'
    'coat|coat rack|coatrack|coffee|coffee bean bag|coffee box|coffee kettle|coffee machine|coffee maker|'
    'coffee mug|coffee table|column|commode|compost bin|computer|computer desk|computer tower|'
    'conditioner bottle|cone|console|contact lens solution bottle|container|controller|cooking pan|'
    'cooking pot|cooler|copier|corner bench|cosmetic bag|cosmetics kit|couch|couch cushions|couch table|'
    'counter|cover|covered box|cradle|crate|crib|crutches|cube|cup|cupboard|cups|curtain|curtain rail|'
    'curtain rod|curtains|cushion|cushions stack|cut board|cutting board|cycling trainer|dart board|darts|'
    'decoration|desk|desk chair|desk lamp|device|diaper bin|diapers|dining chair|dining set|dining table|'
    'discs|dish|dish dryer|dish rack|dishdrainer|dishes|dishwasher|dishwashing soap bottle|dispenser|display|'
    'display case|display rack|display sign|divider|documents|dog|doll|dollhouse|dolly|door|door /other room|'
    'door mat|door wall|doorframe|doorframe /other room|doors|drain pipe|drawer|drawers|drawers rack|dress|'
    'dress rack|dresser|dressing table|drinks|drum|drum set|dryer sheets|drying machine|drying rack|'
    'duffel bag|dumbbell|dumbbell plates|dumbbells|dumbell|dustpan|easel|electric panel|elevator|'
    'elliptical machine|elliptical trainer|end table|envelope|exercise ball|exercise bike|exercise machine|'
    'exhaust hood|exit sign|extractor fan|fabric|fan|faucet|fence|festoon|figure|file cabinet|file cabinets|'
    'file organizer|film light|fire alarm|fire extinguisher|fire hose|fire sprinkler|fireplace|firewood box|'
    'fish|flag|flip flops|flipchart|floor|floor /other room|floor lamp|floor mat|flower|flower stand|'
    'flowerpot|flowers|flush|folded beach chairs|folded boxes|folded chair|folded chairs|folded ladder|'
    'folded table|folder|folding chair|food|food bag|food container|foosball table|footrest|footstool|frame|'
    'fridge|fruit|fruit plate|fruits|frying pan|furnace|furniture|fuse box|futon|gaming wheel|garage door|'
    'garbage|garbage bag|garbage bin|garden umbrella|generator|glass|glass doors|glass wall|globe|golf bag|'
    'grab bar|grass|grocery bag|guitar|guitar case|gymnastic ball|hair brush|hair dryer|hamper|hand brush|'
    'hand dryer|hand rail|hand sanitzer dispenser|hand towel|hand washer|handbag|handhold|handicap bar|handle|'
    'handrail|hanger|hangers|hanging|hanging cabinet|hat|hatrack|headboard|headphones|heater|helmet|hood|hose|'
    'hoverboard|humidifier|hygiene products|ikea bag|instrument|instrument case|ipad|iron|ironing board|item|'
    'items|jacket|jalousie|jar|jewelry box|jug|juicer|kettle|keyboard|keyboard piano|kids bicycle|kids chair|'
    'kids rocking chair|kids stool|kids table|kinect|kitchen appliance|kitchen apron|kitchen cabinet|'
    'kitchen cabinets|kitchen counter|kitchen hood|kitchen island|kitchen item|kitchen mixer|kitchen object|'
    'kitchen playset|kitchen rack|kitchen sink|kitchen sofa|kitchen towel|kitchenaid mixer|knife block|'
    'knife box|ladder|lamp|lamp base|laptop|laundry bag|laundry basket|laundry detergent|laundry hamper|ledge|'
    'legs|letter|light|light switch|linen|locker|lockers|loft bed|loofa|lotion|lotion bottle|lounger|luggage|'
    'luggage rack|luggage stand|lunch box|machine|magazine|magazine files|magazine rack|magazine stand|mail|'
    'mail tray|mail trays|mailbox|mailboxes|mandarins|mannequin|map|mask|massage chair|mat|mattress|medal|'
    'media center|medical device|menu|messenger bag|meter|metronome|microwave|milk|mini fridge|mirror|'
    'mirror doors|monitor|mop|mouse|mouthwash bottle|mug|multicooker|music book|music stand|napkins|nerf gun|'
    'newspaper|newspaper rack|night lamp|night light|nightstand|notebook|notebooks|notepad|object|objects|'
    'office chair|office table|open kitchen cabinet|organizer|organizer shelf|ottoman|oven|oven glove|'
    'oven mitt|pack|package|packs|painting|pan|pantry shelf|pantry wall|pantry walls|pants|paper|paper bag|'
    'paper cutter|paper holder|paper organizer|paper shredder|paper sign|paper stack|paper towel|'
    'paper towel dispenser|paper towel roll|paper towel rolls|paper tray|papers|partition|pavement|pc|'
    'pen holder|pepper|person|pet bed|photo frame|photos|piano|piano bench|picture|pictures|pile|'
    'pile of books|pile of bottles|pile of candles|pile of folders|pile of papers|pile of pillows|'
    'pile of wires|pillar|pillow|pillows|pin board wall|ping pong paddle|ping pong table|pipe|pipes|pitcher|'
    'pizza box|pizza boxes|plank|plant|planter|plants|plastic bin|plastic container|plastic containers|'
    'plastic storage bin|plate|plates|platform|player|plunger|pocket|podest|podium|pooh|pool table|postcard|'
    'poster|poster cutter|poster printer|poster tube|pot|potted plant|power outlet|power strip|price tag|'
    'printer|projector|projector screen|puf|puppet|purse|quadcopter|rack|rack stand|radiator|radio|rag|rail|'
    'railing|ramp|range hood|recliner chair|recycle bin|recycling bin|refrigerator|remote|rice cooker|'
    'rocking chair|rod|roll|rolled carpet|rolled poster|rolling cart|rolling pin|roof|roomba|rope|round table|'
    'rowing machine|rubbish bin|rug|sack|salad|salt|santa|sauce boat|scale|scanner|scarf|screen|seat|seat pad|'
    'sewing machine|shades|shampoo|shampoo bottle|shaving cream|sheets|shelf|shelf clutter|shelf of caps|'
    'shelf unit|shelves|shirt|shoe|shoe box|shoe commode|shoe rack|shoe shelf|shoes|shopping bag|shorts|'
    'showcase|shower|shower control valve|shower curtain|shower curtain rod|shower door|shower doors|'
    'shower faucet handle|shower floor|shower gel|shower head|shower wall|shower walls|shredder|side table|'
    'sideboard|sidecouch|sidetable|sign|sink|sink counter|slanted wall|sleeping bag|sliding door|'
    'sliding wood door|slipper|slippers|smoke detector|snowboard|soap|soap bar|soap bottle|soap dish|'
    'soap dispenser|sock|socket|socks|soda can|soda stream|sofa|sofa bed|sofa chair|sofa couch|speaker|spice|'
    'spices|sponge|spots|spray bottle|squeezer|stack of chairs|stack of cups|stack of folded chairs|'
    'stacks of cups|stair|stair rail|staircase|stairs|stand|stapler|star|statue|statuette|step|step stool|'
    'stepladder|stepstool|stereo|stereo equipment|stick|sticker|stool|stools|storage|storage bin|storage box|'
    'storage container|storage organizer|storage shelf|storage unit|stove|stovetop|stroller|structure|'
    'studio light|stuffed animal|subwoofer|sugar packs|suitcase|suitcases|sweater|swiffer|switch|t-shirt|'
    'table|table lamp|table soccer|tablet|tank|tap|tape|tea kettle|teapot|teddy bear|telephone|telescope|'
    'tennis racket|tennis racket bag|tennis raquet|tent|thermos|thermostat|things|tile|tire|tissue box|'
    'tissue pack|toaster|toaster oven|toilet|toilet brush|toilet flush button|toilet paper|'
    'toilet paper dispenser|toilet paper holder|toilet paper rolls|toilet seat cover dispenser|toiletry|'
    'tool wall|toolbox|toothbrush|toothpaste|towel|towel basket|towel rack|towels|toy|toy dinosaur|toy house|'
    'traffic cone|trash bag|trash bin|trash can|trashcan|tray|tray rack|treadmill|tree|tree decoration|tripod|'
    'trolley|trunk|tube|tupperware|tv|tv stand|tv table|typewriter|ukulele|umbrella|upholstered wall|urinal|'
    'utensils|vacuum|vacuum cleaner|vase|vending machine|vent|ventilation|ventilator|wall|wall /other room|'
    'wall frame|wall hanging|wall lamp|wall mounted coat rack|wall plants|wall rack|wardrobe|wardrobe cabinet|'
    'wardrobe closet|wardrobe door|washbasin|washcloth|washing basket|washing machine|washing machines|'
    'washing powder|water|water bottle|water cooler|water fountain|water heater|water pitcher|water softener|'
    'watering can|weights|weigths|wet floor sign|wheel|whiteboard|whiteboard eraser|wig|window|window board|'
    'window clutter|window frame|windows|windowsill|wood|wood box|workbench|xbox|xbox controller|yoga mat'
)

# Extra object nouns, matched against a lemma or the last word of a compound lemma.
OBJECT_NOUNS: frozenset[str] = _words(
    'blind|bookcase|booth|cooker|cot|countertop|cutter|cycle|detergent|dryer|dustbin|fountain|freshener|frig|'
    'handler|heating|holder|island|lavatory|maker|panel|photo|portrait|receptacle|recliner|robe|shelfs|shelft|'
    'surface|television|toliet|tote|tub|unit|urinal|vanity|vessel|wagon'
)

# Scene nouns; only one-word entries can match a token lemma, so only those are kept.
SCENE_NOUNS: frozenset[str] = _words(
    'airfield|airport|alcove|alley|amphitheater|apartment|aquarium|aqueduct|arcade|arch|archive|arena|asia|'
    'atrium|attic|auditorium|badlands|bakery|balcony|ballroom|bank|banquet|bar|barn|barndoor|baseball|'
    'basement|bath|bathroom|bazaar|beach|bedchamber|bedroom|berth|boardwalk|boathouse|bookstore|bridge|'
    'broadleaf|bullring|butte|cabin|cafeteria|campsite|campus|canal|canyon|carrousel|castle|catacomb|cemetery|'
    'chalet|church|classroom|cliff|closet|coast|cockpit|conference|corral|corridor|cottage|court|courthouse|'
    'courtyard|creek|crevasse|crosswalk|cubicles|cultivated|dam|delicatessen|desert|diner|discotheque|dock|'
    'door|doorway|dorm|downtown|driveway|drugstore|elevator|embassy|entrance|escalator|excavation|exterior|'
    'factory|farm|field|fishpond|football|forest|gallery|galley|garage|gazebo|glacier|greenhouse|grotto|gym|'
    'gymnasium|hangar|harbor|hayfield|heliport|highway|hockey|hole|hospital|hostel|hotel|house|iceberg|igloo|'
    'indoor|inn|interior|islet|jacuzzi|jail|junkyard|kasbah|kennel|kindergarden|kitchen|lab|laboratory|lagoon|'
    'lake|landfill|laundromat|lawn|library|lighthouse|lobby|loft|mall|mansion|market|marsh|mausoleum|medina|'
    'mezzanine|moat|mosque|motel|mountain|museum|natural|nursery|ocean|office|oilrig|orchard|outdoor|pagoda|'
    'palace|pantry|park|pasture|patio|pavilion|performance|pharmacy|pier|pizzeria|platform|playground|'
    'playroom|plaza|pond|porch|promenade|pub|public|racecourse|raceway|raft|rainforest|reception|residential|'
    'resort|restaurant|river|rodeo|room|ruin|runway|salon|sand|sandbox|sauna|school|schoolhouse|shed|shop|'
    'shopfront|shower|showroom|skating|sky|skyscraper|slum|snowfield|soccer|stable|stadium|stage|staircase|'
    'station|store|street|studio|supermarket|swamp|synagogue|temple|terminal|theater|tower|toyshop|trench|'
    'tundra|underwater|urban|valley|vegetation|viaduct|village|vineyard|volcano|water|waterfall|wave|wild|'
    'windmill|yard'
)

# Chunk-root lemmas that make a chunk a pronoun (a reference back to the main object).
PRONOUN_LEMMAS: frozenset[str] = frozenset({"this", "it", "which", "there", "these", "those"})

# ScanNet-18 class names that mark context objects (the 0.5 regions of the sampling target);
# 'shower curtain' has two words and so never matches a single word of a sentence.
SCANNET18_CLASSES: tuple[str, ...] = (
    "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter", "desk",
    "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
)
