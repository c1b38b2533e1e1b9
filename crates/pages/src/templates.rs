//! The page templates: HTML and CSS of sign-in pages as real sites lay them out.
//!
//! Ten layouts (centred card, split screen with a hero photo, top navigation with a footer, a
//! modal over a dimmed page, a cookie banner over a card, webmail, bank, parcel tracking, cloud
//! storage, social sign-in), each in light or dark theme, at desktop (1280 × 800) or mobile
//! (390 × 844) width, in one of several real fonts, with real words in one of fourteen languages
//! and the brand's name where real pages put it (title, heading, button, copyright line).
//! Every logo is an `<img data-logo="brand">`; the renderer reads its box from the DOM.

use std::fmt::Write as _;

/// A page layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Template {
    Card,
    SplitHero,
    TopNav,
    Modal,
    Cookie,
    Webmail,
    Bank,
    Parcel,
    Cloud,
    Social,
}

impl Template {
    /// Every template.
    pub const ALL: [Template; 10] = [
        Template::Card,
        Template::SplitHero,
        Template::TopNav,
        Template::Modal,
        Template::Cookie,
        Template::Webmail,
        Template::Bank,
        Template::Parcel,
        Template::Cloud,
        Template::Social,
    ];

    /// Its name in manifests and reports.
    pub fn name(self) -> &'static str {
        match self {
            Template::Card => "card",
            Template::SplitHero => "split_hero",
            Template::TopNav => "top_nav",
            Template::Modal => "modal",
            Template::Cookie => "cookie",
            Template::Webmail => "webmail",
            Template::Bank => "bank",
            Template::Parcel => "parcel",
            Template::Cloud => "cloud",
            Template::Social => "social",
        }
    }

    /// Held-out templates: never used for training pages, only for held-out ones (a fixed,
    /// documented choice: one overlay layout, one form layout, one two-column layout).
    pub fn is_heldout(self) -> bool {
        matches!(self, Template::Modal | Template::Parcel | Template::Cloud)
    }
}

/// How the page's logo is shown (also the report's rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Colour mark (gilbarbara `*-icon.svg`).
    Colour,
    /// Full colour logo, usually a wordmark (other gilbarbara files).
    Wordmark,
    /// One-colour simple-icons mark in the brand colour.
    Mono,
    /// One-colour mark in white on a brand-coloured bar.
    Bar,
}

impl Variant {
    /// Its name in manifests and reports.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Colour => "colour",
            Variant::Wordmark => "wordmark",
            Variant::Mono => "mono",
            Variant::Bar => "bar",
        }
    }
}

/// A logo placed on a page.
#[derive(Debug, Clone)]
pub struct LogoView {
    /// Gallery brand name.
    pub brand: String,
    /// Display name (the label of a social sign-in button).
    pub name: String,
    /// `data:` URL of the SVG (already coloured for mono marks).
    pub src: String,
    pub variant: Variant,
    /// CSS height in pixels.
    pub height: u32,
}

/// A hero photo and the logo boxes in it (in the photo's own pixels).
#[derive(Debug, Clone)]
pub struct Hero {
    /// `file://` URL.
    pub src: String,
    pub boxes: Vec<([f32; 4], String)>,
}

/// Everything a page shows.
#[derive(Debug, Clone)]
pub struct PageSpec {
    pub template: Template,
    pub dark: bool,
    pub mobile: bool,
    pub font: &'static str,
    pub lang: usize,
    /// The brand's display name (`None` on a page without a logo: generic words only).
    pub brand_name: Option<String>,
    /// Brand colour (accent of buttons and bars).
    pub colour: [u8; 3],
    /// The page's own logo (absent on no-logo pages).
    pub logo: Option<LogoView>,
    /// A second, small copy of the page's logo (navigation or footer), as sites repeat it.
    pub small_logo: Option<LogoView>,
    /// Other brands' small marks (social sign-in buttons, payment cards).
    pub extra: Vec<LogoView>,
    pub hero: Option<Hero>,
    /// Show a row of common non-logo page elements (numbered badges, symbol buttons, star
    /// ratings, tags) somewhere on the page: distractors the localiser must learn to leave alone.
    pub widgets: bool,
    /// Drives the layout's small choices (alignment, widths, which links).
    pub seed: u64,
}

/// Fonts installed by scripts/setup-chromium.sh (Debian `fonts-*` packages).
pub const FONTS: [&str; 9] = ["Roboto", "Open Sans", "Lato", "Liberation Sans", "DejaVu Sans", "Noto Sans", "Carlito", "Liberation Serif", "Noto Serif"];

/// Words of a sign-in page in one language.
pub struct Words {
    pub code: &'static str,
    pub sign_in: &'static str,
    pub email: &'static str,
    pub password: &'static str,
    pub forgot: &'static str,
    pub create: &'static str,
    pub remember: &'static str,
    pub next: &'static str,
    pub cookies: &'static str,
    pub accept: &'static str,
    pub filler: &'static str,
    pub rights: &'static str,
    pub track: &'static str,
    pub secure: &'static str,
}

/// Fourteen languages (Latin, Cyrillic, Greek, Arabic, Devanagari and Thai scripts).
pub const LANGS: [Words; 14] = [
    Words {
        code: "en",
        sign_in: "Sign in",
        email: "Email or phone",
        password: "Password",
        forgot: "Forgot password?",
        create: "Create account",
        remember: "Remember me",
        next: "Continue",
        cookies: "We use cookies to improve your experience and to show you relevant content.",
        accept: "Accept all",
        filler: "Manage your account, payments and security settings in one place. Your data is protected with end-to-end encryption.",
        rights: "All rights reserved.",
        track: "Track your parcel",
        secure: "Secure login",
    },
    Words {
        code: "de",
        sign_in: "Anmelden",
        email: "E-Mail-Adresse",
        password: "Passwort",
        forgot: "Passwort vergessen?",
        create: "Konto erstellen",
        remember: "Angemeldet bleiben",
        next: "Weiter",
        cookies: "Wir verwenden Cookies, um Ihnen ein besseres Nutzungserlebnis zu bieten.",
        accept: "Alle akzeptieren",
        filler: "Verwalten Sie Ihr Konto, Zahlungen und Sicherheitseinstellungen an einem Ort.",
        rights: "Alle Rechte vorbehalten.",
        track: "Sendung verfolgen",
        secure: "Sichere Anmeldung",
    },
    Words {
        code: "fr",
        sign_in: "Se connecter",
        email: "Adresse e-mail",
        password: "Mot de passe",
        forgot: "Mot de passe oublié ?",
        create: "Créer un compte",
        remember: "Se souvenir de moi",
        next: "Suivant",
        cookies: "Nous utilisons des cookies pour améliorer votre expérience sur notre site.",
        accept: "Tout accepter",
        filler: "Gérez votre compte, vos paiements et vos paramètres de sécurité au même endroit.",
        rights: "Tous droits réservés.",
        track: "Suivre mon colis",
        secure: "Connexion sécurisée",
    },
    Words {
        code: "es",
        sign_in: "Iniciar sesión",
        email: "Correo electrónico",
        password: "Contraseña",
        forgot: "¿Olvidaste tu contraseña?",
        create: "Crear cuenta",
        remember: "Recordarme",
        next: "Siguiente",
        cookies: "Utilizamos cookies para mejorar tu experiencia y mostrarte contenido relevante.",
        accept: "Aceptar todo",
        filler: "Administra tu cuenta, tus pagos y la seguridad desde un solo lugar.",
        rights: "Todos los derechos reservados.",
        track: "Rastrear envío",
        secure: "Acceso seguro",
    },
    Words {
        code: "pt",
        sign_in: "Entrar",
        email: "E-mail ou telefone",
        password: "Senha",
        forgot: "Esqueceu a senha?",
        create: "Criar conta",
        remember: "Lembrar de mim",
        next: "Próximo",
        cookies: "Usamos cookies para melhorar sua experiência em nosso site.",
        accept: "Aceitar todos",
        filler: "Gerencie sua conta, pagamentos e configurações de segurança em um só lugar.",
        rights: "Todos os direitos reservados.",
        track: "Rastrear encomenda",
        secure: "Acesso seguro",
    },
    Words {
        code: "it",
        sign_in: "Accedi",
        email: "Indirizzo email",
        password: "Password",
        forgot: "Password dimenticata?",
        create: "Crea un account",
        remember: "Ricordami",
        next: "Avanti",
        cookies: "Utilizziamo i cookie per migliorare la tua esperienza di navigazione.",
        accept: "Accetta tutti",
        filler: "Gestisci il tuo account, i pagamenti e la sicurezza in un unico posto.",
        rights: "Tutti i diritti riservati.",
        track: "Traccia la spedizione",
        secure: "Accesso sicuro",
    },
    Words {
        code: "nl",
        sign_in: "Inloggen",
        email: "E-mailadres",
        password: "Wachtwoord",
        forgot: "Wachtwoord vergeten?",
        create: "Account aanmaken",
        remember: "Onthoud mij",
        next: "Volgende",
        cookies: "Wij gebruiken cookies om uw ervaring te verbeteren.",
        accept: "Alles accepteren",
        filler: "Beheer uw account, betalingen en beveiliging op één plek.",
        rights: "Alle rechten voorbehouden.",
        track: "Volg je pakket",
        secure: "Veilig inloggen",
    },
    Words {
        code: "pl",
        sign_in: "Zaloguj się",
        email: "Adres e-mail",
        password: "Hasło",
        forgot: "Nie pamiętasz hasła?",
        create: "Utwórz konto",
        remember: "Zapamiętaj mnie",
        next: "Dalej",
        cookies: "Używamy plików cookie, aby poprawić komfort korzystania z serwisu.",
        accept: "Akceptuj wszystkie",
        filler: "Zarządzaj kontem, płatnościami i bezpieczeństwem w jednym miejscu.",
        rights: "Wszelkie prawa zastrzeżone.",
        track: "Śledź przesyłkę",
        secure: "Bezpieczne logowanie",
    },
    Words {
        code: "tr",
        sign_in: "Oturum aç",
        email: "E-posta adresi",
        password: "Şifre",
        forgot: "Şifrenizi mi unuttunuz?",
        create: "Hesap oluştur",
        remember: "Beni hatırla",
        next: "Devam",
        cookies: "Deneyiminizi iyileştirmek için çerezler kullanıyoruz.",
        accept: "Tümünü kabul et",
        filler: "Hesabınızı, ödemelerinizi ve güvenlik ayarlarınızı tek yerden yönetin.",
        rights: "Tüm hakları saklıdır.",
        track: "Kargonu takip et",
        secure: "Güvenli giriş",
    },
    Words {
        code: "ru",
        sign_in: "Войти",
        email: "Электронная почта",
        password: "Пароль",
        forgot: "Забыли пароль?",
        create: "Создать аккаунт",
        remember: "Запомнить меня",
        next: "Далее",
        cookies: "Мы используем файлы cookie, чтобы сделать сайт удобнее для вас.",
        accept: "Принять все",
        filler: "Управляйте аккаунтом, платежами и настройками безопасности в одном месте.",
        rights: "Все права защищены.",
        track: "Отследить посылку",
        secure: "Безопасный вход",
    },
    Words {
        code: "el",
        sign_in: "Σύνδεση",
        email: "Διεύθυνση email",
        password: "Κωδικός πρόσβασης",
        forgot: "Ξεχάσατε τον κωδικό;",
        create: "Δημιουργία λογαριασμού",
        remember: "Να με θυμάσαι",
        next: "Συνέχεια",
        cookies: "Χρησιμοποιούμε cookies για να βελτιώσουμε την εμπειρία σας.",
        accept: "Αποδοχή όλων",
        filler: "Διαχειριστείτε τον λογαριασμό, τις πληρωμές και την ασφάλειά σας από ένα σημείο.",
        rights: "Με την επιφύλαξη παντός δικαιώματος.",
        track: "Εντοπισμός δέματος",
        secure: "Ασφαλής σύνδεση",
    },
    Words {
        code: "ar",
        sign_in: "تسجيل الدخول",
        email: "البريد الإلكتروني",
        password: "كلمة المرور",
        forgot: "هل نسيت كلمة المرور؟",
        create: "إنشاء حساب",
        remember: "تذكرني",
        next: "متابعة",
        cookies: "نستخدم ملفات تعريف الارتباط لتحسين تجربتك.",
        accept: "قبول الكل",
        filler: "أدر حسابك ومدفوعاتك وإعدادات الأمان من مكان واحد.",
        rights: "جميع الحقوق محفوظة.",
        track: "تتبع شحنتك",
        secure: "دخول آمن",
    },
    Words {
        code: "hi",
        sign_in: "साइन इन करें",
        email: "ईमेल या फ़ोन",
        password: "पासवर्ड",
        forgot: "पासवर्ड भूल गए?",
        create: "खाता बनाएं",
        remember: "मुझे याद रखें",
        next: "आगे बढ़ें",
        cookies: "हम आपके अनुभव को बेहतर बनाने के लिए कुकीज़ का उपयोग करते हैं।",
        accept: "सभी स्वीकार करें",
        filler: "अपने खाते, भुगतान और सुरक्षा सेटिंग्स को एक ही स्थान पर प्रबंधित करें।",
        rights: "सर्वाधिकार सुरक्षित।",
        track: "पार्सल ट्रैक करें",
        secure: "सुरक्षित लॉगिन",
    },
    Words {
        code: "th",
        sign_in: "เข้าสู่ระบบ",
        email: "อีเมลหรือโทรศัพท์",
        password: "รหัสผ่าน",
        forgot: "ลืมรหัสผ่าน?",
        create: "สร้างบัญชี",
        remember: "จดจำฉัน",
        next: "ถัดไป",
        cookies: "เราใช้คุกกี้เพื่อปรับปรุงประสบการณ์ของคุณ",
        accept: "ยอมรับทั้งหมด",
        filler: "จัดการบัญชี การชำระเงิน และความปลอดภัยของคุณได้ในที่เดียว",
        rights: "สงวนลิขสิทธิ์",
        track: "ติดตามพัสดุ",
        secure: "เข้าสู่ระบบอย่างปลอดภัย",
    },
];

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn logo_html(l: &LogoView) -> String {
    let img = format!(r#"<img class="logo" data-logo="{}" data-variant="{}" src="{}" style="height:{}px" alt="">"#, esc(&l.brand), l.variant.name(), l.src, l.height);
    img
}

struct Ctx<'a> {
    s: &'a PageSpec,
    w: &'static Words,
    name: String,
    pick: u64,
}

impl Ctx<'_> {
    /// A deterministic choice in `0..n` (advances).
    fn pick(&mut self, n: u64) -> u64 {
        self.pick = proxima_base::mix64(self.pick.wrapping_add(0x9e37_79b9_7f4a_7c15));
        self.pick % n.max(1)
    }

    fn logo(&self) -> String {
        match &self.s.logo {
            Some(l) if l.variant == Variant::Bar => format!(r#"<div class="brandbar" style="background:{}">{}</div>"#, hex(self.s.colour), logo_html(l)),
            Some(l) => logo_html(l),
            None => String::new(),
        }
    }

    fn small(&self) -> String {
        self.s.small_logo.as_ref().map(logo_html).unwrap_or_default()
    }

    fn heading(&self) -> String {
        match &self.s.brand_name {
            Some(_) => format!("{} — {}", self.w.sign_in, esc(&self.name)),
            None => self.w.sign_in.to_string(),
        }
    }

    fn form(&mut self) -> String {
        let w = self.w;
        let mut f = String::new();
        let _ = write!(f, r#"<form onsubmit="return false"><label>{}</label><input type="text" placeholder="name@example.com">"#, w.email);
        let _ = write!(f, r#"<label>{}</label><input type="password" value="password1">"#, w.password);
        if self.pick(2) == 0 {
            let _ = write!(f, r#"<div class="row"><label class="check"><input type="checkbox" checked> {}</label><a href="/">{}</a></div>"#, w.remember, w.forgot);
        }
        let btn = match &self.s.brand_name {
            Some(_) if self.pick(2) == 0 => format!("{} {}", w.sign_in, esc(&self.name)),
            _ => w.next.to_string(),
        };
        let _ = write!(f, r#"<button class="primary">{btn}</button><p class="muted"><a href="/">{}</a></p></form>"#, w.create);
        f
    }

    fn extras(&self) -> String {
        self.s.extra.iter().map(|l| format!(r#"<button class="social">{}<span>Continue with {}</span></button>"#, logo_html(l), esc(&l.name))).collect()
    }

    /// A row of 2–5 non-logo elements at a random place over the page (fixed position): numbered
    /// badges and step circles, symbol buttons (✓ ! ? ★ ✉ …), star ratings and word tags, in the
    /// accent colour or a common interface colour, 16–40 px.
    fn widgets(&mut self) -> String {
        const COLOURS: [&str; 7] = ["var(--accent)", "#d93025", "#1e8e3e", "#1a73e8", "#f29900", "#9334e6", "#5f6368"];
        const GLYPHS: [&str; 14] = ["✓", "!", "?", "i", "★", "✉", "⚙", "☰", "✕", "➜", "♥", "⌂", "☎", "+"];
        const TAGS: [&str; 8] = ["New", "Beta", "Sale", "-20%", "Pro", "Free", "Live", "24/7"];
        let mut items = String::new();
        for _ in 0..2 + self.pick(4) {
            let colour = COLOURS[self.pick(COLOURS.len() as u64) as usize];
            let size = 16 + self.pick(25);
            let round = if self.pick(3) == 0 { "6px" } else { "50%" };
            let item = match self.pick(4) {
                0 => {
                    let n = 1 + self.pick(9);
                    format!(
                        r#"<span style="display:inline-flex;align-items:center;justify-content:center;width:{size}px;height:{size}px;border-radius:50%;background:{colour};color:#fff;font-size:{}px;font-weight:600">{n}</span>"#,
                        size * 11 / 20
                    )
                }
                1 => {
                    let g = GLYPHS[self.pick(GLYPHS.len() as u64) as usize];
                    let (bg, fg) = if self.pick(2) == 0 { (colour, "#fff") } else { ("transparent", colour) };
                    format!(
                        r#"<span style="display:inline-flex;align-items:center;justify-content:center;width:{size}px;height:{size}px;border-radius:{round};background:{bg};color:{fg};font-size:{}px;font-weight:700">{g}</span>"#,
                        size * 3 / 5
                    )
                }
                2 => {
                    let full = 3 + self.pick(3) as usize;
                    format!(r#"<span style="color:#f5a623;font-size:{}px;letter-spacing:1px">{}{}</span>"#, size * 3 / 4, "★".repeat(full), "☆".repeat(5 - full))
                }
                _ => {
                    let tag = TAGS[self.pick(TAGS.len() as u64) as usize];
                    format!(r#"<span style="background:{colour};color:#fff;border-radius:999px;padding:2px 10px;font-size:12px;font-weight:600">{tag}</span>"#)
                }
            };
            items.push_str(&item);
        }
        let (top, left) = (4 + self.pick(85), 2 + self.pick(75));
        format!(
            r#"<div class="widgets" style="position:fixed;top:{top}%;left:{left}%;display:flex;gap:{}px;align-items:center;z-index:5">{items}</div>"#,
            8 + self.pick(24)
        )
    }

    fn footer(&self) -> String {
        let who = if self.s.brand_name.is_some() { esc(&self.name) } else { "Online services".into() };
        format!(r#"<footer>{}<span>© 2026 {who}. {}</span><a href="/">Privacy</a><a href="/">Terms</a><a href="/">Help</a></footer>"#, self.small(), self.w.rights)
    }

    fn hero(&self) -> String {
        match &self.s.hero {
            Some(h) => {
                let boxes: Vec<String> = h.boxes.iter().map(|(b, brand)| format!("[{},{},{},{},\"{}\"]", b[0], b[1], b[2], b[3], esc(brand))).collect();
                format!(r#"<img class="hero" src="{}" data-boxes='[{}]' alt="">"#, h.src, boxes.join(","))
            }
            None => r#"<div class="hero gradient"></div>"#.into(),
        }
    }
}

const BASE_CSS: &str = r#"
*{box-sizing:border-box} html,body{margin:0;height:100%}
body{font-family:var(--font),sans-serif;background:var(--bg);color:var(--fg);font-size:15px}
a{color:var(--accent);text-decoration:none}
.muted{color:var(--muted);font-size:13px}
.card{background:var(--card);border-radius:12px;padding:32px;box-shadow:0 4px 24px rgba(0,0,0,.12);width:400px;max-width:92vw}
form label{display:block;margin:14px 0 6px;font-size:13px;color:var(--muted)}
form input[type=text],form input[type=password]{width:100%;padding:11px 12px;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg);font:inherit}
.row{display:flex;justify-content:space-between;align-items:center;margin-top:12px;font-size:13px}
.check{display:flex !important;gap:6px;align-items:center;margin:0 !important}
button.primary{width:100%;margin-top:20px;padding:12px;border:0;border-radius:6px;background:var(--accent);color:#fff;font:inherit;font-weight:600}
button.social{display:flex;align-items:center;gap:10px;width:100%;margin-top:10px;padding:9px 12px;border:1px solid var(--line);border-radius:6px;background:var(--card);color:var(--fg);font:inherit}
h1{font-size:24px;margin:16px 0 8px} h2{font-size:18px;margin:8px 0}
footer{display:flex;gap:18px;align-items:center;flex-wrap:wrap;padding:18px 28px;font-size:12px;color:var(--muted);border-top:1px solid var(--line)}
nav{display:flex;align-items:center;gap:24px;padding:14px 28px;border-bottom:1px solid var(--line);background:var(--card)}
nav a{color:var(--fg);font-size:14px}
.brandbar{display:flex;align-items:center;padding:12px 24px;min-height:56px}
img.logo{max-width:100%}
.hero{object-fit:cover;width:100%;height:100%;display:block}
.gradient{background:linear-gradient(135deg,var(--accent),#222)}
.center{display:flex;flex-direction:column;align-items:center;justify-content:center;min-height:100%;padding:24px}
p{line-height:1.5}
"#;

/// The page's HTML.
pub fn html(s: &PageSpec) -> String {
    let w = &LANGS[s.lang % LANGS.len()];
    let name = s.brand_name.clone().unwrap_or_default();
    let mut c = Ctx { s, w, name, pick: s.seed };
    let (bg, fg, card, muted, line) =
        if s.dark { ("#121417", "#e8eaed", "#1e2126", "#9aa0a6", "#3c4043") } else { ("#f5f6f8", "#202124", "#ffffff", "#5f6368", "#dadce0") };
    let accent = hex(s.colour);
    let title = match &s.brand_name {
        Some(n) => format!("{} | {}", w.sign_in, esc(n)),
        None => w.secure.to_string(),
    };
    let body = match s.template {
        Template::Card => {
            let align = if c.pick(2) == 0 { "center" } else { "left" };
            format!(
                r#"<div class="center"><div class="card" style="text-align:{align}">{}<h1>{}</h1><p class="muted">{}</p>{}</div><p class="muted">{}</p></div>"#,
                c.logo(),
                c.heading(),
                w.filler,
                c.form(),
                w.rights
            )
        }
        Template::SplitHero => {
            let left = if s.mobile { String::new() } else { format!(r#"<div style="flex:1.2;height:100vh">{}</div>"#, c.hero()) };
            format!(
                r#"<div style="display:flex;min-height:100vh">{left}<div style="flex:1;padding:56px 48px;background:var(--card)">{}<h1>{}</h1><p class="muted">{}</p>{}</div></div>"#,
                c.logo(),
                c.heading(),
                w.filler,
                c.form()
            )
        }
        Template::TopNav => {
            let links = ["Products", "Pricing", "Support", "Blog", "Careers"];
            let nav: String = links.iter().take(2 + c.pick(4) as usize).map(|l| format!(r#"<a href="/">{l}</a>"#)).collect();
            format!(
                r#"<nav>{}{nav}<span style="flex:1"></span><a href="/">{}</a></nav><div class="center" style="min-height:70vh"><div class="card"><h1>{}</h1>{}</div></div>{}"#,
                c.logo(),
                w.create,
                c.heading(),
                c.form(),
                c.footer()
            )
        }
        Template::Modal => {
            let page = format!(
                r#"<nav>{}<span style="flex:1"></span><a href="/">Help</a></nav><div style="padding:40px 60px"><h2>{}</h2><p>{}</p><p>{}</p><div style="height:180px;border-radius:8px" class="gradient"></div></div>"#,
                c.small(),
                w.secure,
                w.filler,
                w.cookies
            );
            format!(
                r#"{page}<div style="position:fixed;inset:0;background:rgba(0,0,0,.55);display:flex;align-items:center;justify-content:center"><div class="card">{}<h1>{}</h1>{}</div></div>"#,
                c.logo(),
                c.heading(),
                c.form()
            )
        }
        Template::Cookie => {
            format!(
                r#"<div class="center"><div class="card">{}<h1>{}</h1>{}</div></div><div style="position:fixed;left:0;right:0;bottom:0;background:var(--card);border-top:1px solid var(--line);padding:18px 28px;display:flex;gap:20px;align-items:center;box-shadow:0 -4px 20px rgba(0,0,0,.15)"><p style="margin:0;flex:1">{} <a href="/">Cookie policy</a></p><button class="primary" style="width:auto;margin:0;padding:10px 22px">{}</button></div>"#,
                c.logo(),
                c.heading(),
                c.form(),
                w.cookies,
                w.accept
            )
        }
        Template::Webmail => {
            format!(
                r#"<div style="background:var(--accent);min-height:38vh;padding:20px 32px">{}</div><div style="display:flex;justify-content:center;margin-top:-18vh"><div class="card"><h1>{}</h1><p class="muted">{}</p>{}</div></div>"#,
                c.logo(),
                c.heading(),
                w.filler,
                c.form()
            )
        }
        Template::Bank => {
            format!(
                r#"<nav>{}<span style="flex:1"></span><span class="muted">🔒 {}</span></nav><div style="display:flex;gap:40px;padding:40px 60px;flex-wrap:wrap"><div class="card"><h2>{}</h2>{}</div><div style="flex:1;min-width:260px"><h2>{}</h2><p>{}</p><p class="muted">{}</p></div></div>{}"#,
                c.logo(),
                w.secure,
                c.heading(),
                c.form(),
                w.secure,
                w.filler,
                w.cookies,
                c.footer()
            )
        }
        Template::Parcel => {
            let steps: String = ["1", "2", "3", "4"].iter().map(|n| format!(r#"<div style="flex:1;text-align:center"><div style="width:28px;height:28px;border-radius:50%;background:var(--accent);color:#fff;margin:0 auto;line-height:28px">{n}</div></div>"#)).collect();
            format!(
                r#"<nav>{}<span style="flex:1"></span><a href="/">{}</a></nav><div style="max-width:720px;margin:40px auto;padding:0 20px"><h1>{}</h1><div style="display:flex;margin:24px 0">{steps}</div><div class="card" style="width:auto"><label>Tracking number</label><form onsubmit="return false"><input type="text" value="JD014600006281234567"><button class="primary">{}</button></form><p class="muted">{}</p></div></div>"#,
                c.logo(),
                w.sign_in,
                w.track,
                w.track,
                w.filler
            )
        }
        Template::Cloud => {
            let files: String = (0..12).map(|i| format!(r#"<div style="height:64px;border-radius:8px;background:var(--line);opacity:.{}"></div>"#, 3 + i % 5)).collect();
            format!(
                r#"<div style="display:flex;min-height:100vh"><div style="flex:1;padding:40px;display:grid;grid-template-columns:repeat(4,1fr);gap:16px;align-content:start;filter:blur(1px)">{files}</div><div style="width:420px;background:var(--card);padding:48px 40px">{}<h1>{}</h1><p class="muted">{}</p>{}</div></div>"#,
                c.logo(),
                c.heading(),
                w.filler,
                c.form()
            )
        }
        Template::Social => {
            format!(
                r#"<div class="center"><div class="card">{}<h1>{}</h1>{}<p class="muted" style="text-align:center">— or —</p>{}</div>{}</div>"#,
                c.logo(),
                c.heading(),
                c.extras(),
                c.form(),
                c.footer()
            )
        }
    };
    let widgets = if s.widgets { c.widgets() } else { String::new() };
    let extra_row = if s.template != Template::Social && !s.extra.is_empty() {
        let icons: String = s.extra.iter().map(logo_html).collect();
        format!(r#"<div style="display:flex;gap:12px;justify-content:center;padding:12px">{icons}</div>"#)
    } else {
        String::new()
    };
    let dir = if w.code == "ar" { "rtl" } else { "ltr" };
    format!(
        r#"<!doctype html><html lang="{}" dir="{dir}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title><style>:root{{--font:'{}';--bg:{bg};--fg:{fg};--card:{card};--muted:{muted};--line:{line};--accent:{accent}}}{BASE_CSS}</style></head><body>{body}{extra_row}{widgets}</body></html>"#,
        w.code, s.font
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(template: Template) -> PageSpec {
        let logo = LogoView { brand: "acme".into(), name: "Acme".into(), src: "data:image/svg+xml;base64,PHN2Zy8+".into(), variant: Variant::Bar, height: 40 };
        PageSpec {
            template,
            dark: true,
            mobile: false,
            font: FONTS[0],
            lang: 0,
            brand_name: Some("Acme & Co".into()),
            colour: [1, 2, 3],
            logo: Some(logo.clone()),
            small_logo: None,
            extra: vec![LogoView { brand: "other".into(), name: "Other".into(), variant: Variant::Mono, height: 18, ..logo }],
            hero: None,
            widgets: false,
            seed: 1,
        }
    }

    #[test]
    fn every_template_names_the_brand_escaped_and_marks_its_logos() {
        for t in Template::ALL {
            let h = html(&spec(t));
            assert!(h.contains("Acme &amp; Co") && !h.contains("Acme & Co"), "{}", t.name());
            assert!(h.contains(r#"data-logo="acme""#), "{}", t.name());
            assert!(h.contains(r#"data-logo="other""#), "{}: extra marks are placed", t.name());
            assert!(h.contains("background:#010203"), "{}: the bar is brand-coloured", t.name());
        }
        let mut s = spec(Template::Card);
        s.logo = None;
        s.brand_name = None;
        s.extra.clear();
        assert!(!html(&s).contains("data-logo"), "a no-logo page has no logo");
        assert_eq!(Template::ALL.iter().filter(|t| t.is_heldout()).count(), 3);
    }

    #[test]
    fn widgets_are_placed_only_when_asked_and_are_never_logos() {
        for t in Template::ALL {
            assert!(!html(&spec(t)).contains(r#"class="widgets""#), "{}", t.name());
            for seed in 0..20 {
                let h = html(&PageSpec { widgets: true, seed, ..spec(t) });
                let row = &h[h.find(r#"<div class="widgets""#).expect("a widget row")..];
                assert!(!row.contains("data-logo") && !row.contains("<img"), "{}: widgets are not logos", t.name());
                assert!(row.matches("<span").count() >= 2, "{row}");
            }
        }
    }
}
